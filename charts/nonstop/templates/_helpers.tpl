{{- define "nonstop.name" -}}nonstop-operator{{- end -}}

{{- define "nonstop.labels" -}}
app.kubernetes.io/name: nonstop-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "nonstop.selector" -}}
app.kubernetes.io/name: nonstop-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "nonstop.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "nonstop.agentImage" -}}
{{ .Values.agent.image.repository | default .Values.image.repository }}:{{ .Values.agent.image.tag | default .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
