{{- define "target-rbac.labels" -}}
app.kubernetes.io/name: kube-failover
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: kube-failover
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The subjects of the daemon's RoleBindings. */}}
{{- define "target-rbac.subjects" -}}
{{- if .Values.subjects -}}
{{ toYaml .Values.subjects }}
{{- else -}}
- kind: ServiceAccount
  name: {{ .Values.serviceAccount.name }}
  namespace: {{ .Release.Namespace }}
{{- end -}}
{{- end -}}

{{/* A Role from a file of deploy/kubernetes/target-rbac (files/), its name and rules as
     they are there, and its RoleBinding to the subjects. Arguments: a list of the root
     context, the Role document, the namespace and the subjects (YAML). */}}
{{- define "target-rbac.role" -}}
{{- $root := index . 0 -}}
{{- $doc := index . 1 -}}
{{- $namespace := index . 2 -}}
{{- $subjects := index . 3 -}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $doc.metadata.name }}
  namespace: {{ $namespace }}
  labels:
    {{- include "target-rbac.labels" $root | nindent 4 }}
rules:
  {{- toYaml $doc.rules | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $doc.metadata.name }}
  namespace: {{ $namespace }}
  labels:
    {{- include "target-rbac.labels" $root | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $doc.metadata.name }}
subjects:
  {{- $subjects | nindent 2 }}
{{- end -}}

{{/* The Role documents of a file (mirror-role.yaml holds three), by name. */}}
{{- define "target-rbac.docs" -}}
{{- $docs := dict -}}
{{- range regexSplit "(?m)^---[ \t]*$" . -1 -}}
{{- $doc := fromYaml . -}}
{{- if and $doc $doc.metadata -}}
{{- $_ := set $docs $doc.metadata.name $doc -}}
{{- end -}}
{{- end -}}
{{- toJson $docs -}}
{{- end -}}
