{{/*
Co-location (colocate.rendererRefiner): the renderer pods also run the refiner, which then has
no objects of its own. These helpers add the refiner's settings, weights and resources to the
renderer's Deployment. Context of each: (dict "root" $ "component" NAME), like _component.tpl.
*/}}

{{/* True for a component that runs another stage in its pods. */}}
{{- define "avatarflow.colocating" -}}
{{- if and (eq .component "renderer") .root.Values.colocate.rendererRefiner -}}true{{- end -}}
{{- end -}}

{{/* True for a component that runs inside another's pods and so renders no objects. */}}
{{- define "avatarflow.colocated" -}}
{{- if and (eq .component "refiner") .root.Values.colocate.rendererRefiner -}}true{{- end -}}
{{- end -}}

{{/* The co-located refiner's settings in the renderer container, as its own pods would get
them (AVATARFLOW_REFINER_*), plus its extraEnv. */}}
{{- define "avatarflow.colocate.env" -}}
{{- $root := .root -}}
{{- $r := $root.Values.components.refiner -}}
- name: AVATARFLOW_RENDERER_COLOCATE
  value: "refiner"
{{- range $key, $name := dict "engine" "ENGINE" "device" "DEVICE" "dtype" "DTYPE" "engineOptions" "ENGINE_OPTIONS" }}
{{- with (get $r $key) }}
- name: {{ printf "AVATARFLOW_REFINER_%s" $name }}
  value: {{ . | toString | quote }}
{{- end }}
{{- end }}
{{- if and $r.weights $r.weights.enabled }}
- name: AVATARFLOW_REFINER_WEIGHTS
  value: {{ $root.Values.colocate.refinerWeightsMountPath | quote }}
{{- end }}
{{- if and $root.Values.triton.enabled (hasKey $root.Values.triton.models "refiner") }}
- name: AVATARFLOW_REFINER_TRITON_URL
  value: {{ printf "%s:%d" (include "avatarflow.triton.fullname" $root) (int $root.Values.triton.ports.grpc) | quote }}
{{- end }}
{{- range $key, $value := ($r.config | default dict) }}
- name: {{ printf "AVATARFLOW_REFINER_%s" (upper $key) }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with $r.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The co-located refiner's weights: a volume (refiner-weights) and its mount. */}}
{{- define "avatarflow.colocate.weights" -}}
{{- $root := .root -}}
{{- $r := $root.Values.components.refiner -}}
{{- if and $r.weights $r.weights.enabled -}}
{{- if not $r.weights.volume -}}
{{- fail "components.refiner.weights.volume is required when weights are enabled" -}}
{{- end -}}
{{- $c := $root.Values.components.renderer -}}
{{- if and $c.weights $c.weights.enabled (eq $c.weights.mountPath $root.Values.colocate.refinerWeightsMountPath) -}}
{{- fail "colocate.refinerWeightsMountPath is the renderer's weights mountPath: pick another" -}}
{{- end -}}
{{- $mount := dict "name" "refiner-weights" "mountPath" $root.Values.colocate.refinerWeightsMountPath "readOnly" true -}}
{{- with $r.weights.subPath -}}
{{- $_ := set $mount "subPath" . -}}
{{- end -}}
{{- toYaml (dict "mount" $mount "volume" (merge (dict "name" "refiner-weights") (deepCopy $r.weights.volume))) -}}
{{- end -}}
{{- end -}}

{{/* The co-located renderer's resources: colocate.resources, or both stages' added up. */}}
{{- define "avatarflow.colocate.resources" -}}
{{- $root := .root -}}
{{- if $root.Values.colocate.resources -}}
{{- toYaml $root.Values.colocate.resources -}}
{{- else -}}
{{- $a := $root.Values.components.renderer.resources | default dict -}}
{{- $b := $root.Values.components.refiner.resources | default dict -}}
{{- $out := dict -}}
{{- range $kind := list "requests" "limits" -}}
{{- $x := get $a $kind | default dict -}}
{{- $y := get $b $kind | default dict -}}
{{- $sum := dict -}}
{{- range $name := concat (keys $x) (keys $y) | uniq | sortAlpha -}}
{{- $_ := set $sum $name (include "avatarflow.colocate.add" (dict "name" $name "a" (get $x $name) "b" (get $y $name))) -}}
{{- end -}}
{{- if $sum -}}
{{- $_ := set $out $kind $sum -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}
{{- end -}}

{{/* Two quantities of resource .name added: cpu in millicores, extended resources (a name
with a "/", e.g. nvidia.com/gpu: devices both engines share) the larger, the rest in bytes. */}}
{{- define "avatarflow.colocate.add" -}}
{{- if not .a -}}
{{- .b -}}
{{- else if not .b -}}
{{- .a -}}
{{- else if eq .name "cpu" -}}
{{- add (include "avatarflow.quantity.milli" .a) (include "avatarflow.quantity.milli" .b) -}}m
{{- else if contains "/" .name -}}
{{- max (int64 .a) (int64 .b) -}}
{{- else -}}
{{- include "avatarflow.quantity.bytesOut" (add (include "avatarflow.quantity.bytes" .a) (include "avatarflow.quantity.bytes" .b)) -}}
{{- end -}}
{{- end -}}

{{/* A CPU quantity ("2", 1.5, "500m") in millicores. */}}
{{- define "avatarflow.quantity.milli" -}}
{{- $q := toString . -}}
{{- if hasSuffix "m" $q -}}
{{- trimSuffix "m" $q | int64 -}}
{{- else -}}
{{- round (mulf (float64 $q) 1000) 0 | int64 -}}
{{- end -}}
{{- end -}}

{{/* A byte quantity ("1Gi", "512Mi", "1G", 1048576) in bytes. */}}
{{- define "avatarflow.quantity.bytes" -}}
{{- $q := toString . -}}
{{- $factor := 1 -}}
{{- $units := list (list "Ki" 1024) (list "Mi" 1048576) (list "Gi" 1073741824) (list "Ti" 1099511627776) (list "k" 1000) (list "M" 1000000) (list "G" 1000000000) (list "T" 1000000000000) -}}
{{- range $u := $units -}}
{{- if and (eq $factor 1) (hasSuffix (index $u 0) $q) -}}
{{- $q = trimSuffix (index $u 0) $q -}}
{{- $factor = index $u 1 -}}
{{- end -}}
{{- end -}}
{{- round (mulf (float64 $q) $factor) 0 | int64 -}}
{{- end -}}

{{/* Bytes as the largest binary unit that divides them (3Gi, 1536Mi), else plain bytes. */}}
{{- define "avatarflow.quantity.bytesOut" -}}
{{- $n := int64 . -}}
{{- if eq (mod $n 1073741824) 0 -}}{{ div $n 1073741824 }}Gi
{{- else if eq (mod $n 1048576) 0 -}}{{ div $n 1048576 }}Mi
{{- else -}}{{ $n }}{{- end -}}
{{- end -}}
