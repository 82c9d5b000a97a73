{{/*
Labels of every top-level object: the kustomize base's name label plus Helm's own. Pod template
labels and selectors carry the name label only, so a chart upgrade never rolls the pods and the
DaemonSet's (immutable) selector is the same as daemonset/'s.
*/}}
{{- define "rollcache.labels" -}}
app.kubernetes.io/name: rollcache
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "rollcache.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/*
config.yaml: the documented default file, or the no-secrets one, with the values namespaces and
extraImages written into `namespaces` and `extra_images`.
*/}}
{{- define "rollcache.config" -}}
{{- $file := ternary "files/config.yaml" "files/config-no-secrets.yaml" .Values.secrets.enabled -}}
{{- $text := .Files.Get $file -}}
{{- with .Values.namespaces -}}
{{- $text = include "rollcache.configList" (dict "text" $text "key" "namespaces" "value" .) -}}
{{- end -}}
{{- with .Values.extraImages -}}
{{- $text = include "rollcache.configList" (dict "text" $text "key" "extra_images" "value" .) -}}
{{- end -}}
{{ $text }}
{{- end }}

{{/*
The config file `text` with the list option `key` set to `value`: replacing the default's `[]`,
or added when the file does not set it.
*/}}
{{- define "rollcache.configList" -}}
{{- $line := printf "\n%s: %s\n" .key (toJson .value) -}}
{{- $empty := printf "\n%s: []\n" .key -}}
{{- if contains $empty .text -}}
{{- replace $empty $line .text -}}
{{- else -}}
{{- printf "%s%s" .text $line -}}
{{- end -}}
{{- end }}

{{/*
Labels of the indexer's top-level objects. Its pods carry app.kubernetes.io/name=rollcache-index
instead: the agent's DaemonSet, Service, NetworkPolicy and PodMonitor select `rollcache`.
*/}}
{{- define "rollcache.indexLabels" -}}
{{ include "rollcache.labels" . }}
app.kubernetes.io/component: index
{{- end }}

{{/*
Fleet mode needs the indexer to read Helm release Secrets, and `rollcache index` cannot turn that
source off: refused with secrets.enabled=false rather than installed with an indexer that never
finishes its first list.
*/}}
{{- define "rollcache.fleetChecked" -}}
{{- if and .Values.fleet.enabled (not .Values.secrets.enabled) -}}
{{- fail "fleet.enabled=true needs secrets.enabled=true: the indexer reads Helm release Secrets (the agents then only get Secrets by name)" -}}
{{- end -}}
{{- end }}
