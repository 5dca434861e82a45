{{/*
Chart name, truncated to a DNS label.
*/}}
{{- define "datajob-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources: RELEASE-datajob-operator, or RELEASE when the release
name already contains the chart name.
*/}}
{{- define "datajob-operator.fullname" -}}
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

{{/*
Name and version of the chart, for the helm.sh/chart label.
*/}}
{{- define "datajob-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "datajob-operator.labels" -}}
helm.sh/chart: {{ include "datajob-operator.chart" . }}
{{ include "datajob-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: datajob-operator
{{- end }}

{{/*
Labels that select the operator pods.
*/}}
{{- define "datajob-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "datajob-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the operator's ServiceAccount.
*/}}
{{- define "datajob-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "datajob-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Operator image reference: repository@digest when image.digest is set (the tag is then
ignored), else repository:tag (default: the chart's appVersion).
*/}}
{{- define "datajob-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Rules on the namespaced resources the operator manages: DataJobs (the finalizer, status and
ttlSecondsAfterFinished deletion), executor pods and events. In a ClusterRole, or in a Role
of values.watchNamespace.
*/}}
{{- define "datajob-operator.namespacedRules" -}}
- apiGroups: ["datajob.dev"]
  resources: ["datajobs"]
  verbs: ["get", "list", "watch", "patch", "update", "delete"]
- apiGroups: ["datajob.dev"]
  resources: ["datajobs/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["datajob.dev"]
  resources: ["datajobs/finalizers"]
  verbs: ["update"]
# patch: only to remove the driver pod's result finalizer datajob.dev/result.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete", "patch"]
# The job's query as an immutable ConfigMap owned by the job (get: check who owns one that exists).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
Rules on the cluster-scoped ComputePools: always a ClusterRole.
*/}}
{{- define "datajob-operator.clusterRules" -}}
- apiGroups: ["datajob.dev"]
  resources: ["computepools"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["datajob.dev"]
  resources: ["computepools/status"]
  verbs: ["get", "patch", "update"]
# A pool's namespaceSelector is matched against the labels of the job's namespace.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get"]
# The node of an executor pod stuck terminating: is it gone, out of service, not Ready?
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get"]
{{- end }}

{{/*
Jobs API (api.enabled): its full name, labels and the labels that select its pods (distinct
from the operator's, so neither Deployment nor Service selects the other's pods).
*/}}
{{- define "datajob-operator.api.fullname" -}}
{{- printf "%s-api" (include "datajob-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "datajob-operator.api.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-api" (include "datajob-operator.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "datajob-operator.api.labels" -}}
helm.sh/chart: {{ include "datajob-operator.chart" . }}
{{ include "datajob-operator.api.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: datajob-operator
app.kubernetes.io/component: api
{{- end }}
