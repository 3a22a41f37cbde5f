{{/*
Co-location: a stage's pods also run the next stage (the guest), which then has no objects of
its own. colocate.rendererRefiner: the renderer runs the refiner; colocate.audioMotion: the
audio-encoder runs motion-gen. These helpers add the guest's settings, weights and resources
to its host's Deployment. Context of each: (dict "root" $ "component" NAME), like
_component.tpl.
*/}}

{{/* Every co-locatable pair: the colocate switch, the host and guest components, and the
colocate values naming the guest's weights mount path in the host pod and the host
container's explicit resources. */}}
{{- define "avatarflow.colocate.pairs" -}}
- switch: rendererRefiner
  host: renderer
  guest: refiner
  weightsMountPath: refinerWeightsMountPath
  resources: resources
- switch: audioMotion
  host: audio-encoder
  guest: motion-gen
  weightsMountPath: motionGenWeightsMountPath
  resources: audioMotionResources
{{- end -}}

{{/* The switched-on pair in which .component plays .role ("host" or "guest"), as YAML; {}
when none. */}}
{{- define "avatarflow.colocate.pair" -}}
{{- $found := dict -}}
{{- range $p := include "avatarflow.colocate.pairs" . | fromYamlArray -}}
{{- if and (get $.root.Values.colocate $p.switch) (eq (get $p $.role) $.component) -}}
{{- $found = $p -}}
{{- end -}}
{{- end -}}
{{- toYaml $found -}}
{{- end -}}

{{/* True for a component that runs another stage in its pods. */}}
{{- define "avatarflow.colocating" -}}
{{- if include "avatarflow.colocate.pair" (dict "root" .root "component" .component "role" "host") | fromYaml -}}true{{- end -}}
{{- end -}}

{{/* True for a component that runs inside another's pods and so renders no objects. */}}
{{- define "avatarflow.colocated" -}}
{{- if include "avatarflow.colocate.pair" (dict "root" .root "component" .component "role" "guest") | fromYaml -}}true{{- end -}}
{{- end -}}

{{/* The co-located guest's settings in its host's container, as its own pods would get them
(AVATARFLOW_<GUEST>_*), plus its extraEnv. */}}
{{- define "avatarflow.colocate.env" -}}
{{- $root := .root -}}
{{- $p := include "avatarflow.colocate.pair" (dict "root" .root "component" .component "role" "host") | fromYaml -}}
{{- $r := index $root.Values.components $p.guest -}}
{{- $prefix := include "avatarflow.envPrefix" (dict "component" $p.guest) -}}
- name: {{ printf "%sCOLOCATE" (include "avatarflow.envPrefix" .) }}
  value: {{ $p.guest | quote }}
{{- range $key, $name := dict "engine" "ENGINE" "device" "DEVICE" "dtype" "DTYPE" "engineOptions" "ENGINE_OPTIONS" }}
{{- with (get $r $key) }}
- name: {{ printf "%s%s" $prefix $name }}
  value: {{ . | toString | quote }}
{{- end }}
{{- end }}
{{- if and $r.weights $r.weights.enabled }}
- name: {{ printf "%sWEIGHTS" $prefix }}
  value: {{ get $root.Values.colocate $p.weightsMountPath | quote }}
{{- end }}
{{- if and $root.Values.triton.enabled (hasKey $root.Values.triton.models $p.guest) }}
- name: {{ printf "%sTRITON_URL" $prefix }}
  value: {{ printf "%s:%d" (include "avatarflow.triton.fullname" $root) (int $root.Values.triton.ports.grpc) | quote }}
{{- end }}
{{- range $key, $value := ($r.config | default dict) }}
- name: {{ printf "%s%s" $prefix (upper $key) }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with $r.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The co-located guest's weights: a volume (<guest>-weights) and its mount; {} when the
component hosts no guest with weights. */}}
{{- define "avatarflow.colocate.weights" -}}
{{- $root := .root -}}
{{- $p := include "avatarflow.colocate.pair" (dict "root" .root "component" .component "role" "host") | fromYaml -}}
{{- $r := dict -}}
{{- if $p -}}
{{- $r = index $root.Values.components $p.guest -}}
{{- end -}}
{{- if and $r.weights $r.weights.enabled -}}
{{- if not $r.weights.volume -}}
{{- fail (printf "components.%s.weights.volume is required when weights are enabled" $p.guest) -}}
{{- end -}}
{{- $path := get $root.Values.colocate $p.weightsMountPath -}}
{{- $c := index $root.Values.components .component -}}
{{- if and $c.weights $c.weights.enabled (eq $c.weights.mountPath $path) -}}
{{- fail (printf "colocate.%s is the %s's weights mountPath: pick another" $p.weightsMountPath .component) -}}
{{- end -}}
{{- $name := printf "%s-weights" $p.guest -}}
{{- $mount := dict "name" $name "mountPath" $path "readOnly" true -}}
{{- with $r.weights.subPath -}}
{{- $_ := set $mount "subPath" . -}}
{{- end -}}
{{- toYaml (dict "mount" $mount "volume" (merge (dict "name" $name) (deepCopy $r.weights.volume))) -}}
{{- end -}}
{{- end -}}

{{/* Where a component's pods may run, as YAML: its own nodeSelector, tolerations,
runtimeClassName and affinity; a co-locating host's also admit its guest's node (a GPU node
for a neural engine): nodeSelector both merged (the host's value wins on a key), tolerations
both, runtimeClassName and affinity the host's, else the guest's. */}}
{{- define "avatarflow.colocate.scheduling" -}}
{{- $c := index .root.Values.components .component -}}
{{- $out := dict "nodeSelector" ($c.nodeSelector | default dict) "tolerations" ($c.tolerations | default list) "runtimeClassName" ($c.runtimeClassName | default "") "affinity" ($c.affinity | default dict) -}}
{{- $p := include "avatarflow.colocate.pair" (dict "root" .root "component" .component "role" "host") | fromYaml -}}
{{- if $p -}}
{{- $g := index .root.Values.components $p.guest -}}
{{- $_ := set $out "nodeSelector" (mergeOverwrite (deepCopy ($g.nodeSelector | default dict)) (deepCopy $out.nodeSelector)) -}}
{{- $_ = set $out "tolerations" (concat $out.tolerations ($g.tolerations | default list) | uniq) -}}
{{- $_ = set $out "runtimeClassName" ($out.runtimeClassName | default $g.runtimeClassName | default "") -}}
{{- $_ = set $out "affinity" ($out.affinity | default $g.affinity | default dict) -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* A component's probes: the chart's, then a co-located guest's (its startup budget for
loading its models), then the component's own over them. */}}
{{- define "avatarflow.colocate.probes" -}}
{{- $c := index .root.Values.components .component -}}
{{- $probes := deepCopy .root.Values.probes -}}
{{- $p := include "avatarflow.colocate.pair" (dict "root" .root "component" .component "role" "host") | fromYaml -}}
{{- if $p -}}
{{- $probes = mergeOverwrite $probes (deepCopy ((index .root.Values.components $p.guest).probes | default dict)) -}}
{{- end -}}
{{- toYaml (mergeOverwrite $probes (deepCopy ($c.probes | default dict))) -}}
{{- end -}}

{{/* The co-locating host's resources: its colocate resources value, or both stages' added
up. */}}
{{- define "avatarflow.colocate.resources" -}}
{{- $root := .root -}}
{{- $p := include "avatarflow.colocate.pair" (dict "root" .root "component" .component "role" "host") | fromYaml -}}
{{- $mine := get $root.Values.colocate $p.resources -}}
{{- if $mine -}}
{{- toYaml $mine -}}
{{- else -}}
{{- $a := (index $root.Values.components .component).resources | default dict -}}
{{- $b := (index $root.Values.components $p.guest).resources | default dict -}}
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
