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
