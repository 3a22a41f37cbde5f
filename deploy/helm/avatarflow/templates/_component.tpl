{{/*
The objects of one avatarflow service (gateway or a pipeline stage). Each
<kind>-<component>.yaml file includes one of these with (dict "root" $ "component" NAME).
*/}}

{{/* True when KEDA owns this component's replica count. */}}
{{- define "avatarflow.autoscaled" -}}
{{- $c := index .root.Values.components .component -}}
{{- if and .root.Values.autoscaling.enabled (hasKey .root.Values.streams .component) $c.autoscaling.enabled -}}true{{- end -}}
{{- end -}}

{{/* True when the engine profile applies to this component (every stage, not the gateway). */}}
{{- define "avatarflow.profiled" -}}
{{- if and .root.Values.profile.name (ne .component "gateway") -}}true{{- end -}}
{{- end -}}

{{/* The container's environment: AVATARFLOW_* settings (avatarflow/runtime/settings.py). */}}
{{- define "avatarflow.component.env" -}}
{{- $root := .root -}}
{{- $c := index $root.Values.components .component -}}
{{- $prefix := include "avatarflow.envPrefix" . -}}
{{- if include "avatarflow.redis.hasPassword" $root }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.redis.external.existingSecret }}
      key: {{ $root.Values.redis.external.existingSecretKey }}
{{- end }}
- name: AVATARFLOW_REDIS_URL
  value: {{ include "avatarflow.redis.url" $root | quote }}
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
{{- range $key, $value := $root.Values.config }}
- name: {{ printf "AVATARFLOW_%s" (upper $key) }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- range $key, $value := $c.config }}
- name: {{ printf "%s%s" $prefix (upper $key) }}
  value: {{ $value | toString | quote }}
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
      {{- with $c.runtimeClassName }}
      runtimeClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- with $c.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.affinity }}
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
          env:
            {{- include "avatarflow.component.env" . | trim | nindent 12 }}
          {{- include "avatarflow.grpcProbes" . | trim | nindent 10 }}
          resources:
            {{- include "avatarflow.resources" (dict "what" (printf "components.%s" .component) "resources" $c.resources) | nindent 12 }}
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
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $root.Values.tmpSizeLimit }}
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

{{/* KEDA: the stage's consumer group on the join stream of its input topic. */}}
{{- define "avatarflow.component.scaledobject" -}}
{{- if include "avatarflow.autoscaled" . -}}
{{- $root := .root -}}
{{- $as := $root.Values.autoscaling -}}
{{- $c := index $root.Values.components .component -}}
{{- $s := index $root.Values.streams .component -}}
{{- $redis := dict "address" (include "avatarflow.redis.address" $root) "databaseIndex" (include "avatarflow.redis.database" $root) "stream" $s.stream "consumerGroup" $s.group -}}
{{- if and (not $root.Values.redis.enabled) (hasPrefix "rediss://" $root.Values.redis.external.url) -}}
{{- $_ := set $redis "enableTLS" "true" -}}
{{- end -}}
{{- if include "avatarflow.redis.hasPassword" $root -}}
{{- $_ := set $redis "passwordFromEnv" "REDIS_PASSWORD" -}}
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
  triggers:
    # Sessions announced on the join stream that no replica has taken yet.
    - type: redis-streams
      name: {{ printf "%s-lag" .component }}
      metadata:
        {{- toYaml $redis | nindent 8 }}
        lagCount: {{ $c.autoscaling.lagCount | int | toString | quote }}
        activationLagCount: {{ $c.autoscaling.activationLagCount | int | toString | quote }}
    {{- if gt (int $c.autoscaling.sessionsPerReplica) 0 }}
    # Sessions in progress: each owned session keeps its join entry pending.
    - type: redis-streams
      name: {{ printf "%s-sessions" .component }}
      metadata:
        {{- toYaml $redis | nindent 8 }}
        pendingEntriesCount: {{ $c.autoscaling.sessionsPerReplica | int | toString | quote }}
    {{- end }}
    {{- if $model }}
    - type: prometheus
      name: {{ printf "%s-%s" .component (kebabcase $as.prometheus.metric) }}
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
