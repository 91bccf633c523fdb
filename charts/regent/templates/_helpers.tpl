{{- define "regent.fullname" -}}
{{- printf "%s-regent" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "regent.labels" -}}
app.kubernetes.io/name: regent
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "regent.selectorLabels" -}}
app.kubernetes.io/name: regent
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "regent.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The selector labels as k=v,k=v, for the operator's flags. */}}
{{- define "regent.selectorLabelPairs" -}}
{{- $pairs := list }}
{{- range $k, $v := (include "regent.selectorLabels" . | fromYaml) }}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) }}
{{- end }}
{{- join "," $pairs }}
{{- end -}}

{{/*
Whether to render a Prometheus Operator object: "true" or "". Its value is
true, false or auto; auto renders it when the cluster serves the kind
(monitoring.coreos.com/v1, or monitoring.coreos.com/v1/<kind>): helm
template without --api-versions renders none.
Call with (dict "root" $ "value" .Values.monitoring.podMonitor.enabled "kind" "PodMonitor").
*/}}
{{- define "regent.monitoring.enabled" -}}
{{- if eq (toString .value) "auto" -}}
{{- $apis := .root.Capabilities.APIVersions -}}
{{- if or ($apis.Has (printf "monitoring.coreos.com/v1/%s" .kind)) ($apis.Has "monitoring.coreos.com/v1") }}true{{ end -}}
{{- else if eq (toString .value) "true" -}}
true
{{- end -}}
{{- end -}}

{{/* The labels of a monitoring object: the chart's and the value's extra ones (which win). */}}
{{- define "regent.monitoring.labels" -}}
{{- toYaml (merge (deepCopy (.extra | default dict)) (include "regent.labels" .root | fromYaml)) }}
{{- end -}}
