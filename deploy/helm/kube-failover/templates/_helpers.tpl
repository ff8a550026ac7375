{{/* The objects' name: the release's when it contains the chart's name. */}}
{{- define "kube-failover.fullname" -}}
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

{{/* The selector: app.kubernetes.io/name is what the kustomize base selects on too
     (and the ServiceMonitor's job label), the instance keeps two releases apart. */}}
{{- define "kube-failover.selectorLabels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kube-failover.labels" -}}
{{ include "kube-failover.selectorLabels" . }}
app.kubernetes.io/part-of: kube-failover
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "kube-failover.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end -}}

{{/* Where the pod reads its kubeconfigs: the chart's Secret or the user's. */}}
{{- define "kube-failover.kubeconfigSecret" -}}
{{- if .Values.kubeconfigs.files -}}
{{ include "kube-failover.fullname" . }}-kubeconfigs
{{- else -}}
{{ .Values.kubeconfigs.existingSecret }}
{{- end -}}
{{- end -}}

{{/* The mount of the kubeconfig Secret. */}}
{{- define "kube-failover.kubeconfigDir" -}}/etc/kube-failover/kubeconfigs{{- end -}}

{{/* The config.toml rendered from .Values.config. Helm reads every number of the values
     as a float (quorum = 2.0); values.schema.json only lets integers through where the
     daemon wants one, and they are written without ".0". */}}
{{- define "kube-failover.configToml" -}}
{{ regexReplaceAll "(?m)^(\\s*[A-Za-z0-9_]+ = -?[0-9]+)\\.0$" (toToml .Values.config) "${1}" }}
{{- end -}}
