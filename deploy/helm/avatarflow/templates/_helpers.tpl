{{/*
Names, labels, images, probes, resources and the Redis connection shared by every template.
Component templates pass a context dict: (dict "root" $ "component" "renderer").
*/}}

{{- define "avatarflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every resource name: <release>-avatarflow, or the release name when it
already contains the chart name. */}}
{{- define "avatarflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* <fullname>-<component>; the component name is kept whole, the prefix is cut to fit. */}}
{{- define "avatarflow.componentFullname" -}}
{{- $prefix := include "avatarflow.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-" -}}
{{- printf "%s-%s" $prefix .component -}}
{{- end -}}

{{- define "avatarflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "avatarflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "avatarflow.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "avatarflow.labels" -}}
helm.sh/chart: {{ include "avatarflow.chart" .root }}
{{ include "avatarflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: avatarflow
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{/* Labels of chart-wide objects (PrometheusRule, dashboard) that belong to no component. */}}
{{- define "avatarflow.chartLabels" -}}
{{ include "avatarflow.labels" (dict "root" . "component" "monitoring") }}
{{- end -}}

{{/* AVATARFLOW_<SERVICE>_ prefix of a component's own settings (avatarflow.settings). */}}
{{- define "avatarflow.envPrefix" -}}
{{- printf "AVATARFLOW_%s_" (.component | upper | replace "-" "_") -}}
{{- end -}}

{{/* An avatarflow image: <image.registry>/<image.prefix><name> unless `image.repository`
names one; the tag defaults to image.tag, then the chart's appVersion. Context: (dict "root" $
"name" NAME "image" the component's image values). */}}
{{- define "avatarflow.imageRef" -}}
{{- $img := .root.Values.image -}}
{{- $repo := .image.repository -}}
{{- if not $repo -}}
{{- $repo = printf "%s%s" $img.prefix .name -}}
{{- if $img.registry -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" $img.registry) $repo -}}
{{- end -}}
{{- end -}}
{{- printf "%s:%s" $repo (toString (coalesce .image.tag $img.tag .root.Chart.AppVersion)) -}}
{{- end -}}

{{/* A component's image (deploy/docker/Dockerfile with SERVICE=<name>). */}}
{{- define "avatarflow.image" -}}
{{- $c := index .root.Values.components .component -}}
{{- include "avatarflow.imageRef" (dict "root" .root "name" .component "image" $c.image) -}}
{{- end -}}

{{/* requests and limits, both required on every container. Context: (dict "what" name
"resources" map). */}}
{{- define "avatarflow.resources" -}}
{{- $r := .resources | default dict -}}
{{- if not (and $r.requests $r.limits) -}}
{{- fail (printf "%s: resources.requests and resources.limits are both required" .what) -}}
{{- end -}}
{{- toYaml $r -}}
{{- end -}}

{{/* Startup, readiness and liveness on the standard grpc.health.v1 service: the services
report NOT_SERVING until their models are warm, so the startup probe carries the warm-up and
readiness takes a replica out of its Service while it drains.
The gateway differs in two ways. It also reports NOT_SERVING while it is full (admission), so
its liveness is a TCP check: a full gateway is healthy and must not be restarted. And with TLS
on its port, kubelet (which cannot speak TLS to a gRPC probe) probes the plaintext health-only
port (gateway.tls.healthPort) instead. */}}
{{- define "avatarflow.grpcProbes" -}}
{{- $c := index .root.Values.components .component -}}
{{- $probes := include "avatarflow.colocate.probes" . | fromYaml -}}
{{- $port := int $c.port -}}
{{- $named := "grpc" -}}
{{- if include "avatarflow.gateway.healthPort" . -}}
{{- $port = int .root.Values.gateway.tls.healthPort -}}
{{- $named = "health" -}}
{{- end -}}
{{- range $kind := list "startup" "readiness" "liveness" }}
{{ $kind }}Probe:
  {{- if and (eq $.component "gateway") (eq $kind "liveness") }}
  tcpSocket:
    port: {{ $named }}
  {{- else }}
  grpc:
    port: {{ $port }}
  {{- end }}
  {{- toYaml (index $probes $kind) | nindent 2 }}
{{- end }}
{{- end -}}

{{/* True when this component is the gateway with TLS on: it serves health in plaintext on
gateway.tls.healthPort as well. */}}
{{- define "avatarflow.gateway.healthPort" -}}
{{- if and (eq .component "gateway") .root.Values.gateway.tls.enabled -}}true{{- end -}}
{{- end -}}

{{/* The Secret with the gateway's certificate: named, or the one cert-manager writes. */}}
{{- define "avatarflow.gateway.tlsSecret" -}}
{{- $tls := .Values.gateway.tls -}}
{{- if $tls.secretName -}}
{{- $tls.secretName -}}
{{- else if $tls.certManager.enabled -}}
{{- printf "%s-tls" (include "avatarflow.componentFullname" (dict "root" . "component" "gateway")) -}}
{{- end -}}
{{- end -}}

{{/* The gateway's exposure values that cannot be checked by the schema alone. Secure by
default: API keys are required unless switched off. */}}
{{- define "avatarflow.gateway.check" -}}
{{- $g := .Values.gateway -}}
{{- if and $g.auth.enabled (not $g.auth.existingSecret) -}}
{{- fail (printf "gateway.auth: API keys are required by default, and no Secret is named. Make a keys file (it holds only hashes) and a Secret: `avatarflow keys new --tenant NAME --file keys.yaml` (prints the key once), then `kubectl -n %s create secret generic avatarflow-api-keys --from-file=keys.yaml`, and set gateway.auth.existingSecret=avatarflow-api-keys. Or set gateway.auth.enabled=false to let anyone who reaches the port call the API." .Release.Namespace) -}}
{{- end -}}
{{- if $g.tls.certManager.enabled -}}
{{- if not $g.tls.enabled -}}
{{- fail "gateway.tls.certManager.enabled needs gateway.tls.enabled=true" -}}
{{- end -}}
{{- if not $g.tls.certManager.issuerRef.name -}}
{{- fail "gateway.tls.certManager.issuerRef.name is required: the cert-manager Issuer or ClusterIssuer that signs the gateway's certificate" -}}
{{- end -}}
{{- end -}}
{{- if and $g.tls.enabled (not (include "avatarflow.gateway.tlsSecret" .)) -}}
{{- fail "gateway.tls.secretName is required when gateway.tls.enabled: a kubernetes.io/tls Secret with tls.crt and tls.key (or set gateway.tls.certManager.enabled to have cert-manager write one)" -}}
{{- end -}}
{{- if and $g.tls.clientCaSecret (not $g.tls.clientAuth) -}}
{{- fail "gateway.tls.clientCaSecret is set but gateway.tls.clientAuth is false: set clientAuth=true to require client certificates" -}}
{{- end -}}
{{- if and $g.tls.enabled (has (int $g.tls.healthPort) (list (int .Values.components.gateway.port) (int .Values.metrics.port))) -}}
{{- fail "gateway.tls.healthPort must differ from components.gateway.port and metrics.port" -}}
{{- end -}}
{{- $t := .Values.takeover -}}
{{- if lt (int $t.claimIdleMs) (mul 2 (int $t.heartbeatMs)) -}}
{{- fail "takeover.claimIdleMs must be at least 2 x takeover.heartbeatMs (a replica must miss two heartbeats before it is presumed dead)" -}}
{{- end -}}
{{- end -}}

{{- define "avatarflow.redis.fullname" -}}
{{- include "avatarflow.componentFullname" (dict "root" . "component" "redis") -}}
{{- end -}}

{{/* Exactly one of redis.enabled and redis.external.url. */}}
{{- define "avatarflow.redis.check" -}}
{{- $r := .Values.redis -}}
{{- if and $r.enabled $r.external.url -}}
{{- fail "redis: set redis.enabled=false to use redis.external.url (or clear the URL)" -}}
{{- end -}}
{{- if not (or $r.enabled $r.external.url) -}}
{{- fail "redis: enable the in-chart Redis (redis.enabled=true) or set redis.external.url" -}}
{{- end -}}
{{- if and $r.external.existingSecret (contains "@" $r.external.url) -}}
{{- fail "redis.external.url must not carry credentials when redis.external.existingSecret is set" -}}
{{- end -}}
{{- if and $r.auth.existingSecret $r.external.existingSecret -}}
{{- fail "redis: set one of redis.auth.existingSecret (preferred: AVATARFLOW_REDIS_PASSWORD, any characters) and redis.external.existingSecret (the password put into the URL)" -}}
{{- end -}}
{{- if $r.external.tls.existingSecret -}}
{{- if or $r.enabled (not (include "avatarflow.redis.tls" $)) -}}
{{- fail "redis.external.tls needs an external Redis with a rediss:// (or rediss+cluster://) URL (redis.enabled=false, redis.external.url=rediss://...); the in-chart Redis has no TLS" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "true" when the external Redis is reached over TLS (rediss:// or rediss+cluster://). */}}
{{- define "avatarflow.redis.tls" -}}
{{- if and (not .Values.redis.enabled) (hasPrefix "rediss" .Values.redis.external.url) -}}true{{- end -}}
{{- end -}}

{{/* "true" when the external Redis is a Redis Cluster (redis+cluster://, rediss+cluster://). */}}
{{- define "avatarflow.redis.cluster" -}}
{{- if and (not .Values.redis.enabled) (contains "+cluster://" .Values.redis.external.url) -}}true{{- end -}}
{{- end -}}

{{/* The bus's shard count, as the services compute it (avatarflow/bus/streams/replica.py):
bus.shards, or 16 on a Redis Cluster and 1 on a single Redis. */}}
{{- define "avatarflow.bus.shards" -}}
{{- if gt (int .Values.bus.shards) 0 -}}{{ .Values.bus.shards | int }}
{{- else if include "avatarflow.redis.cluster" . -}}16
{{- else -}}1
{{- end -}}
{{- end -}}

{{/* The env var holding the Redis password, for KEDA's passwordFromEnv; empty = none. */}}
{{- define "avatarflow.redis.passwordEnv" -}}
{{- if .Values.redis.auth.existingSecret -}}
AVATARFLOW_REDIS_PASSWORD
{{- else if include "avatarflow.redis.hasPassword" . -}}
REDIS_PASSWORD
{{- end -}}
{{- end -}}

{{/* Container env entries with the Redis password from its Secret. REDIS_PASSWORD (the
legacy redis.external.existingSecret) is referred to by the URL, so it comes first. */}}
{{- define "avatarflow.redis.passwordEnvEntries" -}}
{{- $r := .Values.redis -}}
{{- if include "avatarflow.redis.hasPassword" . }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $r.external.existingSecret }}
      key: {{ $r.external.existingSecretKey }}
{{- end }}
{{- if $r.auth.existingSecret }}
- name: AVATARFLOW_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $r.auth.existingSecret }}
      key: {{ $r.auth.existingSecretKey }}
{{- end }}
{{- end -}}

{{/* True when the services read the Redis password from a Secret. */}}
{{- define "avatarflow.redis.hasPassword" -}}
{{- if and (not .Values.redis.enabled) .Values.redis.external.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* AVATARFLOW_REDIS_URL. With a password Secret, the URL refers to $(REDIS_PASSWORD), which
Kubernetes expands from the env var defined just before it: redis://[user]:$(REDIS_PASSWORD)@host. */}}
{{- define "avatarflow.redis.url" -}}
{{- include "avatarflow.redis.check" . -}}
{{- $r := .Values.redis -}}
{{- if $r.enabled -}}
{{- printf "redis://%s:%d/%d" (include "avatarflow.redis.fullname" .) (int $r.port) (int $r.database) -}}
{{- else if include "avatarflow.redis.hasPassword" . -}}
{{- $parts := regexSplit "://" $r.external.url 2 -}}
{{- printf "%s://%s:$(REDIS_PASSWORD)@%s" (index $parts 0) $r.external.username (index $parts 1) -}}
{{- else -}}
{{- $r.external.url -}}
{{- end -}}
{{- end -}}

{{/* host:port of Redis as KEDA's operator sees it (from its own namespace). */}}
{{/* The nodes of an external Redis Cluster for KEDA's redis-cluster-streams: "h1:p1, h2:p2". */}}
{{- define "avatarflow.redis.addresses" -}}
{{- $rest := index (regexSplit "://" .Values.redis.external.url 2) 1 -}}
{{- $hosts := regexReplaceAll "/.*$" (regexReplaceAll "^.*@" $rest "") "" -}}
{{- join ", " (splitList "," $hosts) -}}
{{- end -}}

{{- define "avatarflow.redis.address" -}}
{{- $r := .Values.redis -}}
{{- if $r.enabled -}}
{{- printf "%s.%s.svc:%d" (include "avatarflow.redis.fullname" .) .Release.Namespace (int $r.port) -}}
{{- else -}}
{{- $u := urlParse $r.external.url -}}
{{- if contains ":" $u.host -}}{{ $u.host }}{{- else -}}{{ printf "%s:6379" $u.host }}{{- end -}}
{{- end -}}
{{- end -}}

{{- define "avatarflow.redis.database" -}}
{{- if .Values.redis.enabled -}}
{{- .Values.redis.database -}}
{{- else -}}
{{- (urlParse .Values.redis.external.url).path | trimPrefix "/" | default "0" -}}
{{- end -}}
{{- end -}}

{{- define "avatarflow.triton.fullname" -}}
{{- include "avatarflow.componentFullname" (dict "root" . "component" "triton") -}}
{{- end -}}

{{/* Prometheus label matchers that keep one release's series: its namespace and Services. */}}
{{- define "avatarflow.promSelector" -}}
{{- printf "namespace=\"%s\",service=~\"%s-.+\"" .Release.Namespace (include "avatarflow.fullname" .) -}}
{{- end -}}
