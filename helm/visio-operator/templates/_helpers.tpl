{{/*
Names and labels shared by every template.
*/}}

{{/* The chart name, overridable. */}}
{{- define "visio-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of every object of this release. The release name alone when it already contains
the chart name (`helm install visio-operator ...` gives `visio-operator`, not
`visio-operator-visio-operator`).
*/}}
{{- define "visio-operator.fullname" -}}
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

{{/* Labels that select the operator pod (never change them: a Deployment's selector is immutable). */}}
{{- define "visio-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "visio-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels on every object. `app.kubernetes.io/managed-by` is Helm, not visio-operator: the
operator only ever touches objects labelled managed-by=visio-operator, so it never mistakes
its own Deployment or pod for a tenant's child.
*/}}
{{- define "visio-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "visio-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: visio
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The operator image; the in-pod agent sidecar runs the same image. A digest wins over a tag. */}}
{{- define "visio-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "visio-operator.serviceAccountName" -}}
{{- default (include "visio-operator.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/*
The VisioPlatform the operator obeys: `platform.name`, or "" (no platform rules) when the values have no
`platform` at all (an upgrade with --reuse-values from a release before it).
*/}}
{{- define "visio-operator.platformName" -}}
{{- (.Values.platform | default dict).name | default "" -}}
{{- end }}
