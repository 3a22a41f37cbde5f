{{/*
The objects of one avatarflow service (gateway or a pipeline stage). Each
<kind>-<component>.yaml file includes one of these with (dict "root" $ "component" NAME).
*/}}

{{/* True when KEDA owns this component's replica count. */}}
{{- define "avatarflow.autoscaled" -}}
{{- if .root.Values.autoscaling.enabled -}}
{{- if eq .component "gateway" -}}
{{- if .root.Values.gateway.autoscaling.enabled -}}true{{- end -}}
{{- else if and (hasKey .root.Values.streams .component) (index .root.Values.components .component).autoscaling.enabled -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/* True when the engine profile applies to this component (every stage, not the gateway). */}}
{{- define "avatarflow.profiled" -}}
{{- if and .root.Values.profile.name (ne .component "gateway") -}}true{{- end -}}
{{- end -}}

{{/* Settings of every service derived from the chart's values (settings field -> value,
quoted as below): the takeover timing and the Redis TLS files. */}}
{{- define "avatarflow.settings.global" -}}
heartbeat_ms: {{ int .Values.takeover.heartbeatMs | quote }}
claim_idle_ms: {{ int .Values.takeover.claimIdleMs | quote }}
{{- with .Values.redis.external.tls }}
{{- if .existingSecret }}
redis_tls_ca: {{ printf "%s/ca.crt" .mountPath | quote }}
{{- if .clientCert }}
redis_tls_cert: {{ printf "%s/tls.crt" .mountPath | quote }}
redis_tls_key: {{ printf "%s/tls.key" .mountPath | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The gateway's own settings (AVATARFLOW_GATEWAY_<NAME>): API keys, TLS files, admission,
slow clients. Every value is quoted: read back with fromYaml, a bare `off` would be false
and a number would become a float (1000000 -> "1e+06", which no int setting parses). */}}
{{- define "avatarflow.settings.gateway" -}}
{{- $g := .Values.gateway -}}
auth: {{ ternary "required" "off" $g.auth.enabled | quote }}
{{- if $g.auth.enabled }}
api_keys_file: {{ printf "%s/keys.yaml" $g.auth.mountPath | quote }}
{{- end }}
keys_reload_s: {{ $g.reloadSeconds | quote }}
{{- if $g.tls.enabled }}
tls_cert: {{ printf "%s/tls.crt" $g.tls.mountPath | quote }}
tls_key: {{ printf "%s/tls.key" $g.tls.mountPath | quote }}
{{- if $g.tls.clientAuth }}
tls_client_ca: {{ printf "%s/ca.crt" (ternary (printf "%s-client-ca" $g.tls.mountPath) $g.tls.mountPath (not (empty $g.tls.clientCaSecret))) | quote }}
{{- end }}
health_port: {{ int $g.tls.healthPort | quote }}
{{- end }}
max_sessions: {{ int $g.limits.maxSessions | quote }}
tenant_max_sessions: {{ int $g.limits.tenantMaxSessions | quote }}
tenant_max_avatars: {{ int $g.limits.tenantMaxAvatars | quote }}
register_per_minute: {{ $g.limits.registerPerMinute | quote }}
max_lag_ms: {{ $g.slowClients.maxLagMs | quote }}
out_frames: {{ int $g.slowClients.outFrames | quote }}
out_mb: {{ $g.slowClients.outMb | quote }}
evict_s: {{ $g.slowClients.evictSeconds | quote }}
idle_s: {{ $g.slowClients.idleSeconds | quote }}
{{- end -}}

{{/* Read-only mounts of the Secrets a component reads files from: the gateway's keys file,
certificate and client CA; every service's Redis TLS files. Each Secret is mounted as a
directory, never with subPath: Kubernetes updates such mounts in place when the Secret
changes, and the gateway reloads the files. */}}
{{- define "avatarflow.component.secretVolumes" -}}
{{- $root := .root -}}
{{- $g := $root.Values.gateway -}}
{{- $mounts := list -}}
{{- if eq .component "gateway" -}}
{{- if $g.auth.enabled -}}
{{- $mounts = append $mounts (dict "name" "api-keys" "secret" $g.auth.existingSecret "path" $g.auth.mountPath "items" (list (dict "key" $g.auth.secretKey "path" "keys.yaml"))) -}}
{{- end -}}
{{- if $g.tls.enabled -}}
{{- $items := list (dict "key" "tls.crt" "path" "tls.crt") (dict "key" "tls.key" "path" "tls.key") -}}
{{- if and $g.tls.clientAuth (not $g.tls.clientCaSecret) -}}
{{- $items = append $items (dict "key" "ca.crt" "path" "ca.crt") -}}
{{- end -}}
{{- $mounts = append $mounts (dict "name" "tls" "secret" (include "avatarflow.gateway.tlsSecret" $root) "path" $g.tls.mountPath "items" $items) -}}
{{- if and $g.tls.clientAuth $g.tls.clientCaSecret -}}
{{- $mounts = append $mounts (dict "name" "tls-client-ca" "secret" $g.tls.clientCaSecret "path" (printf "%s-client-ca" $g.tls.mountPath) "items" (list (dict "key" "ca.crt" "path" "ca.crt"))) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- with $root.Values.redis.external.tls -}}
{{- if .existingSecret -}}
{{- $items := list (dict "key" "ca.crt" "path" "ca.crt") -}}
{{- if .clientCert -}}
{{- $items = concat $items (list (dict "key" "tls.crt" "path" "tls.crt") (dict "key" "tls.key" "path" "tls.key")) -}}
{{- end -}}
{{- $mounts = append $mounts (dict "name" "redis-tls" "secret" .existingSecret "path" .mountPath "items" $items) -}}
{{- end -}}
{{- end -}}
{{- toYaml $mounts -}}
{{- end -}}

{{/* The container's environment: AVATARFLOW_* settings (avatarflow/runtime/settings.py). */}}
{{- define "avatarflow.component.env" -}}
{{- $root := .root -}}
{{- $c := index $root.Values.components .component -}}
{{- $prefix := include "avatarflow.envPrefix" . -}}
{{- include "avatarflow.redis.passwordEnvEntries" $root }}
- name: AVATARFLOW_REDIS_URL
  value: {{ include "avatarflow.redis.url" $root | quote }}
{{- if gt (int $root.Values.bus.shards) 0 }}
- name: AVATARFLOW_BUS_SHARDS
  value: {{ $root.Values.bus.shards | int | toString | quote }}
{{- end }}
- name: AVATARFLOW_PORT
  value: {{ $c.port | int | toString | quote }}
- name: AVATARFLOW_METRICS_PORT
  value: {{ $root.Values.metrics.port | int | toString | quote }}
{{- range $key, $name := dict "engine" "ENGINE" "device" "DEVICE" "dtype" "DTYPE" "engineOptions" "ENGINE_OPTIONS" }}
{{- with (get $c $key) }}
- name: {{ printf "%s%s" $prefix $name }}
  value: {{ . | toString | quote }}
{{- end }}
{{- end }}
{{- if and $c.weights $c.weights.enabled }}
- name: {{ printf "%sWEIGHTS" $prefix }}
  value: {{ $c.weights.mountPath | quote }}
{{- end }}
{{- if include "avatarflow.profiled" . }}
- name: AVATARFLOW_PROFILE
  value: {{ $root.Values.profile.name | quote }}
- name: AVATARFLOW_WEIGHTS_ROOT
  value: {{ $root.Values.profile.weights.mountPath | quote }}
{{- end }}
{{- if and $root.Values.triton.enabled (hasKey $root.Values.triton.models .component) }}
- name: {{ printf "%sTRITON_URL" $prefix }}
  value: {{ printf "%s:%d" (include "avatarflow.triton.fullname" $root) (int $root.Values.triton.ports.grpc) | quote }}
{{- end }}
{{- if eq .component "gateway" }}
- name: AVATARFLOW_RENDERER_TARGET
  value: {{ printf "%s:%d" (include "avatarflow.componentFullname" (dict "root" $root "component" "renderer")) (int $root.Values.components.renderer.port) | quote }}
{{- end }}
{{- /* Settings the chart derives from its values, then `config` over them: one entry each. */}}
{{- $global := mergeOverwrite (include "avatarflow.settings.global" $root | fromYaml) (deepCopy ($root.Values.config | default dict)) }}
{{- range $key, $value := $global }}
- name: {{ printf "AVATARFLOW_%s" (upper $key) }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- $own := dict }}
{{- if eq .component "gateway" }}
{{- include "avatarflow.gateway.check" $root }}
{{- $own = include "avatarflow.settings.gateway" $root | fromYaml }}
{{- end }}
{{- range $key, $value := mergeOverwrite $own (deepCopy ($c.config | default dict)) }}
- name: {{ printf "%s%s" $prefix (upper $key) }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- if include "avatarflow.colocating" . }}
{{ include "avatarflow.colocate.env" . }}
{{- end }}
- name: HOME
  value: /tmp
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- with $c.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "avatarflow.component.deployment" -}}
{{- $root := .root -}}
{{- $c := index $root.Values.components .component -}}
{{- $secrets := include "avatarflow.component.secretVolumes" . | fromYamlArray -}}
{{- $guest := include "avatarflow.colocate.weights" . | fromYaml -}}
{{- $sched := include "avatarflow.colocate.scheduling" . | fromYaml -}}
{{- $resources := $c.resources -}}
{{- if include "avatarflow.colocating" . -}}
{{- $resources = include "avatarflow.colocate.resources" . | fromYaml -}}
{{- else -}}
{{- $guest = dict -}}
{{- end -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "avatarflow.componentFullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "avatarflow.labels" . | nindent 4 }}
spec:
  {{- if not (include "avatarflow.autoscaled" .) }}
  replicas: {{ $c.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "avatarflow.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "avatarflow.labels" . | nindent 8 }}
        {{- with $c.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $c.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      # Service links would inject AVATARFLOW_<SERVICE>_PORT=tcp://... for the chart's own
      # Services, which avatarflow.settings reads as the gRPC port.
      enableServiceLinks: false
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: {{ $c.terminationGracePeriodSeconds }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $sched.runtimeClassName }}
      runtimeClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- with $sched.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $sched.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $sched.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "avatarflow.image" . | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: ["avatarflow", "serve", {{ .component | quote }}]
          {{- with $c.extraArgs }}
          args:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          ports:
            - name: grpc
              containerPort: {{ $c.port }}
              protocol: TCP
            - name: metrics
              containerPort: {{ $root.Values.metrics.port }}
              protocol: TCP
            {{- if include "avatarflow.gateway.healthPort" . }}
            - name: health
              containerPort: {{ $root.Values.gateway.tls.healthPort }}
              protocol: TCP
            {{- end }}
          env:
            {{- include "avatarflow.component.env" . | trim | nindent 12 }}
          {{- include "avatarflow.grpcProbes" . | trim | nindent 10 }}
          resources:
            {{- include "avatarflow.resources" (dict "what" (printf "components.%s" .component) "resources" $resources) | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if and $c.weights $c.weights.enabled }}
            - name: weights
              mountPath: {{ $c.weights.mountPath }}
              {{- with $c.weights.subPath }}
              subPath: {{ . }}
              {{- end }}
              readOnly: true
            {{- end }}
            {{- if include "avatarflow.profiled" . }}
            - name: weights-root
              mountPath: {{ $root.Values.profile.weights.mountPath }}
              {{- with $root.Values.profile.weights.subPath }}
              subPath: {{ . }}
              {{- end }}
              readOnly: true
            {{- end }}
            {{- with $guest.mount }}
            - {{- toYaml . | nindent 14 }}
            {{- end }}
            {{- range $secrets }}
            - name: {{ .name }}
              mountPath: {{ .path }}
              readOnly: true
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $root.Values.tmpSizeLimit }}
        {{- range $secrets }}
        - name: {{ .name }}
          secret:
            secretName: {{ .secret }}
            # Readable by the service's group (fsGroup) only.
            defaultMode: 0440
            items:
              {{- toYaml .items | nindent 14 }}
        {{- end }}
        {{- if and $c.weights $c.weights.enabled }}
        {{- if not $c.weights.volume }}
        {{- fail (printf "components.%s.weights.volume is required when weights are enabled" .component) }}
        {{- end }}
        - name: weights
          {{- toYaml $c.weights.volume | nindent 10 }}
        {{- end }}
        {{- if include "avatarflow.profiled" . }}
        {{- if not $root.Values.profile.weights.volume }}
        {{- fail "profile.weights.volume is required when profile.name is set" }}
        {{- end }}
        - name: weights-root
          {{- toYaml $root.Values.profile.weights.volume | nindent 10 }}
        {{- end }}
        {{- with $guest.volume }}
        - {{- toYaml . | nindent 10 }}
        {{- end }}
{{- end -}}

{{- define "avatarflow.component.service" -}}
{{- $root := .root -}}
{{- $c := index $root.Values.components .component -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "avatarflow.componentFullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "avatarflow.labels" . | nindent 4 }}
  {{- with $c.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $c.service.type }}
  {{- if and (eq .component "renderer") (eq $c.service.type "ClusterIP") }}
  # Headless: the gateway resolves every renderer pod and spreads portrait analyses over them
  # (gRPC round_robin); a virtual IP would pin its one long-lived channel to a single pod.
  clusterIP: None
  {{- end }}
  selector:
    {{- include "avatarflow.selectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $c.port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    - name: metrics
      port: {{ $root.Values.metrics.port }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
{{- end -}}

{{- define "avatarflow.component.pdb" -}}
{{- $root := .root -}}
{{- $c := index $root.Values.components .component -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "avatarflow.componentFullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "avatarflow.labels" . | nindent 4 }}
spec:
  {{- if hasKey $c.pdb "minAvailable" }}
  minAvailable: {{ $c.pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $c.pdb.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "avatarflow.selectorLabels" . | nindent 6 }}
{{- end -}}

{{/* KEDA, several bus shards: the sum over the shards' triggers, against sessionsPerReplica
(or lagCount without it); with a Triton trigger, the larger of the two ratios against 1. */}}
{{- define "avatarflow.component.shardFormula" -}}
{{- $terms := list -}}
{{- range $i := until .shards -}}
{{- $terms = append $terms (printf "%s_lag_%d" ($.component | replace "-" "_") $i) -}}
{{- if gt (int $.c.autoscaling.sessionsPerReplica) 0 -}}
{{- $terms = append $terms (printf "%s_sessions_%d" ($.component | replace "-" "_") $i) -}}
{{- end -}}
{{- end -}}
{{- $sum := join " + " $terms -}}
{{- $per := ternary $.c.autoscaling.sessionsPerReplica $.c.autoscaling.lagCount (gt (int $.c.autoscaling.sessionsPerReplica) 0) -}}
{{- if .model -}}
{{- $as := .root.Values.autoscaling -}}
{{- $threshold := ternary $as.prometheus.tritonQueueTimeMs $as.prometheus.lateFrameRatio (eq $as.prometheus.metric "tritonQueueTime") -}}
{{- printf "max((%s) / %v, %s / %v)" $sum $per (printf "%s_%s" (.component | replace "-" "_") (snakecase $as.prometheus.metric)) $threshold -}}
{{- else -}}
{{- $sum -}}
{{- end -}}
{{- end -}}

{{- define "avatarflow.component.shardTarget" -}}
{{- if .model -}}1
{{- else if gt (int .c.autoscaling.sessionsPerReplica) 0 -}}{{ .c.autoscaling.sessionsPerReplica | int }}
{{- else -}}{{ .c.autoscaling.lagCount | int }}
{{- end -}}
{{- end -}}

{{/* KEDA: the stage's consumer group on the join stream of its input topic. */}}
{{- define "avatarflow.component.scaledobject" -}}
{{- if include "avatarflow.autoscaled" . -}}
{{- $root := .root -}}
{{- $as := $root.Values.autoscaling -}}
{{- $c := index $root.Values.components .component -}}
{{- $s := index $root.Values.streams .component -}}
{{- $cluster := include "avatarflow.redis.cluster" $root -}}
{{- $shards := int (include "avatarflow.bus.shards" $root) -}}
{{- $redis := dict "consumerGroup" $s.group -}}
{{- if $cluster -}}
{{- $_ := set $redis "addresses" (include "avatarflow.redis.addresses" $root) -}}
{{- else -}}
{{- $_ := set $redis "address" (include "avatarflow.redis.address" $root) -}}
{{- $_ := set $redis "databaseIndex" (include "avatarflow.redis.database" $root) -}}
{{- end -}}
{{- $authRef := $as.redisAuthenticationRef -}}
{{- if not $authRef -}}
{{- if include "avatarflow.redis.tls" $root -}}
{{- $_ := set $redis "enableTLS" "true" -}}
{{- end -}}
{{- with include "avatarflow.redis.passwordEnv" $root -}}
{{- /* KEDA reads the variable from this Deployment's container (its secretKeyRef). */ -}}
{{- $_ := set $redis "passwordFromEnv" . -}}
{{- end -}}
{{- end -}}
{{- $model := "" -}}
{{- if $root.Values.triton.enabled -}}
{{- $model = get $root.Values.triton.models .component -}}
{{- end -}}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ include "avatarflow.componentFullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "avatarflow.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "avatarflow.componentFullname" . }}
  pollingInterval: {{ $as.pollingInterval }}
  cooldownPeriod: {{ $as.cooldownPeriod }}
  minReplicaCount: {{ $c.autoscaling.minReplicas }}
  maxReplicaCount: {{ $c.autoscaling.maxReplicas }}
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        {{- toYaml $as.behavior | nindent 8 }}
    {{- if gt $shards 1 }}
    {{- /* One join stream per bus shard: the HPA sees one metric, the sessions of every
    shard (announced and not yet taken, plus in progress) per replica. */}}
    scalingModifiers:
      formula: {{ include "avatarflow.component.shardFormula" (dict "component" .component "shards" $shards "model" $model "root" $root "c" $c) | quote }}
      target: {{ include "avatarflow.component.shardTarget" (dict "model" $model "c" $c) | quote }}
      metricType: AverageValue
    {{- end }}
  triggers:
    {{- range $i := until $shards }}
    {{- $meta := merge (dict "stream" (replace "{0}" (printf "{%d}" $i) $s.stream)) $redis }}
    # Sessions announced on shard {{ $i }}'s join stream that no replica has taken yet.
    - type: {{ ternary "redis-cluster-streams" "redis-streams" (not (empty $cluster)) }}
      name: {{ ternary (printf "%s_lag_%d" ($.component | replace "-" "_") $i) (printf "%s-lag" $.component) (gt $shards 1) }}
      {{- with $authRef }}
      authenticationRef:
        name: {{ . }}
      {{- end }}
      metadata:
        {{- toYaml $meta | nindent 8 }}
        lagCount: {{ $c.autoscaling.lagCount | int | toString | quote }}
        activationLagCount: {{ $c.autoscaling.activationLagCount | int | toString | quote }}
    {{- if gt (int $c.autoscaling.sessionsPerReplica) 0 }}
    # Sessions in progress on shard {{ $i }}: each owned session keeps its join entry pending.
    - type: {{ ternary "redis-cluster-streams" "redis-streams" (not (empty $cluster)) }}
      name: {{ ternary (printf "%s_sessions_%d" ($.component | replace "-" "_") $i) (printf "%s-sessions" $.component) (gt $shards 1) }}
      {{- with $authRef }}
      authenticationRef:
        name: {{ . }}
      {{- end }}
      metadata:
        {{- toYaml $meta | nindent 8 }}
        pendingEntriesCount: {{ $c.autoscaling.sessionsPerReplica | int | toString | quote }}
    {{- end }}
    {{- end }}
    {{- if $model }}
    - type: prometheus
      name: {{ ternary (printf "%s_%s" (.component | replace "-" "_") (snakecase $as.prometheus.metric)) (printf "%s-%s" .component (kebabcase $as.prometheus.metric)) (gt $shards 1) }}
      metricType: Value
      metadata:
        serverAddress: {{ $as.prometheus.serverAddress | quote }}
        {{- if eq $as.prometheus.metric "tritonQueueTime" }}
        query: {{ include "avatarflow.triton.queueMsQuery" (dict "root" $root "model" $model) | quote }}
        threshold: {{ $as.prometheus.tritonQueueTimeMs | toString | quote }}
        {{- else }}
        query: {{ include "avatarflow.lateRatioQuery" (dict "root" $root "stage" .component) | quote }}
        threshold: {{ $as.prometheus.lateFrameRatio | toString | quote }}
        {{- end }}
        ignoreNullValues: "true"
    {{- end }}
{{- end -}}
{{- end -}}

{{/* Mean time a request to a Triton model waits in the queue, in ms, over the last minute. */}}
{{- define "avatarflow.triton.queueMsQuery" -}}
{{- $sel := printf "namespace=\"%s\",service=\"%s\",model=\"%s\"" .root.Release.Namespace (include "avatarflow.triton.fullname" .root) .model -}}
{{- printf "sum(rate(nv_inference_queue_duration_us{%s}[1m])) / (sum(rate(nv_inference_request_success{%s}[1m])) > 0) / 1000" $sel $sel -}}
{{- end -}}

{{/* Fraction of a stage's frames that were late, over the last two minutes. */}}
{{- define "avatarflow.lateRatioQuery" -}}
{{- $sel := printf "%s,stage=\"%s\"" (include "avatarflow.promSelector" .root) .stage -}}
{{- printf "sum(rate(avatarflow_stage_late_frames_total{%s}[2m])) / (sum(rate(avatarflow_stage_frames_total{%s}[2m])) > 0)" $sel $sel -}}
{{- end -}}

{{- define "avatarflow.component.servicemonitor" -}}
{{- $root := .root -}}
{{- $sm := $root.Values.monitoring.serviceMonitor -}}
{{- if $sm.enabled -}}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "avatarflow.componentFullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "avatarflow.labels" . | nindent 4 }}
    {{- with $sm.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  namespaceSelector:
    matchNames:
      - {{ $root.Release.Namespace }}
  selector:
    matchLabels:
      {{- include "avatarflow.selectorLabels" . | nindent 6 }}
  endpoints:
    - port: metrics
      path: {{ .path | default "/metrics" }}
      interval: {{ $sm.interval }}
      scrapeTimeout: {{ $sm.scrapeTimeout }}
{{- end -}}
{{- end -}}

{{/* An ingress NetworkPolicy for the pods of one component. Context: (dict "root" $
"component" NAME "rules" LIST), each rule (dict "ports" [port names] "from" [peers]
"release" bool): the ports are open to `from` plus, with release, the release's own pods;
a rule with neither is open to anyone. */}}
{{- define "avatarflow.networkpolicy" -}}
{{- $root := .root -}}
{{- if $root.Values.networkPolicy.enabled -}}
{{- $release := dict "podSelector" (dict "matchLabels" (dict "app.kubernetes.io/name" (include "avatarflow.name" $root) "app.kubernetes.io/instance" $root.Release.Name)) -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "avatarflow.componentFullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "avatarflow.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "avatarflow.selectorLabels" . | nindent 6 }}
  # Ingress only: what these pods connect to is not restricted.
  policyTypes:
    - Ingress
  ingress:
    {{- range .rules }}
    {{- $from := .from | default list }}
    {{- if .release }}
    {{- $from = prepend $from $release }}
    {{- end }}
    - ports:
        {{- range .ports }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
      {{- with $from }}
      from:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
{{- end -}}
{{- end -}}

{{/* The NetworkPolicy of a pipeline stage: its gRPC port (health, the gateway's portrait
analyses) for the release's pods, its metrics port for them and for Prometheus. */}}
{{- define "avatarflow.stage.networkpolicy" -}}
{{- $np := .root.Values.networkPolicy -}}
{{- $rules := list (dict "ports" (list "grpc") "release" true) (dict "ports" (list "metrics") "from" $np.metricsFrom "release" true) -}}
{{- include "avatarflow.networkpolicy" (dict "root" .root "component" .component "rules" $rules) -}}
{{- end -}}
