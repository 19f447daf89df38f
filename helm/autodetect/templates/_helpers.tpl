{{- define "autodetect.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{ end }}
{{- end }}

{{- define "autodetect.selectorLabels" -}}
app.kubernetes.io/name: autodetect-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "autodetect.labels" -}}
{{ include "autodetect.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "autodetect.serviceAccount" -}}
{{ .Values.serviceAccount.name | default (include "autodetect.fullname" .) }}
{{- end }}

{{- define "autodetect.clusterScoped" -}}
{{- if not .Values.watchNamespaces }}true{{ end }}
{{- end }}

{{/* The namespaces that get a trial ServiceAccount and its RoleBinding. */}}
{{- define "autodetect.trialNamespaces" -}}
{{- if .Values.watchNamespaces }}{{ toJson .Values.watchNamespaces }}
{{- else }}{{ toJson (.Values.trial.namespaces | default (list .Release.Namespace)) }}{{ end }}
{{- end }}

{{- define "autodetect.webhookSecret" -}}
{{ include "autodetect.fullname" . }}-webhook-tls
{{- end }}

{{- define "autodetect.peeringHook" -}}
helm.sh/hook: post-install,post-upgrade
helm.sh/hook-delete-policy: before-hook-creation
{{- end }}

{{/* The webhook's CA and serving certificate, as JSON {ca, crt, key}: kept from the Secret already installed
(an upgrade does not re-issue it), else made once per render (memoised, so every template sees the same). */}}
{{- define "autodetect.webhookCertificate" -}}
{{- if not (hasKey .Values "_webhookTLS") }}
{{- $service := printf "%s.%s.svc" (include "autodetect.fullname" .) .Release.Namespace }}
{{- $found := lookup "v1" "Secret" .Release.Namespace (include "autodetect.webhookSecret" .) }}
{{- if and $found (hasKey ($found.data | default dict) "ca.crt") }}
{{- $_ := set .Values "_webhookTLS" (dict "ca" (index $found.data "ca.crt") "crt" (index $found.data "tls.crt") "key" (index $found.data "tls.key")) }}
{{- else }}
{{- $ca := genCA (printf "%s-webhook-ca" (include "autodetect.fullname" .)) 3650 }}
{{- $cert := genSignedCert $service nil (list $service (printf "%s.%s" (include "autodetect.fullname" .) .Release.Namespace)) 3650 $ca }}
{{- $_ := set .Values "_webhookTLS" (dict "ca" ($ca.Cert | b64enc) "crt" ($cert.Cert | b64enc) "key" ($cert.Key | b64enc)) }}
{{- end }}
{{- end }}
{{- toJson .Values._webhookTLS }}
{{- end }}
