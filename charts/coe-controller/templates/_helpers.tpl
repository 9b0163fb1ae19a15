{{/* Chart name, truncated to a DNS label. */}}
{{- define "coe-controller.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, plus the chart name unless the release already contains it. */}}
{{- define "coe-controller.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "coe-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "coe-controller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "coe-controller.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "coe-controller.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: coe
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "coe-controller.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "coe-controller.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "coe-controller.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "coe-controller.runtimeImage" -}}
{{- printf "%s:%s" .Values.runtime.image.repository (default .Chart.AppVersion .Values.runtime.image.tag) }}
{{- end }}

{{/* Leader election is on when asked for or when more than one replica could act at once. */}}
{{- define "coe-controller.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/* The S3 Secret the controller loads and passes to training pods: the chart's own (s3.create), else
s3.existingSecret; empty for the pod identity. */}}
{{- define "coe-controller.s3Secret" -}}
{{- if .Values.s3.create }}
{{- printf "%s-s3" (include "coe-controller.fullname" .) | trunc 253 }}
{{- else }}
{{- .Values.s3.existingSecret }}
{{- end }}
{{- end }}
