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
readiness takes a replica out of its Service while it drains. */}}
{{- define "avatarflow.grpcProbes" -}}
{{- $c := index .root.Values.components .component -}}
{{- $probes := mergeOverwrite (deepCopy .root.Values.probes) (deepCopy ($c.probes | default dict)) -}}
{{- $port := int $c.port -}}
{{- range $kind := list "startup" "readiness" "liveness" }}
{{ $kind }}Probe:
  grpc:
    port: {{ $port }}
  {{- toYaml (index $probes $kind) | nindent 2 }}
{{- end }}
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
