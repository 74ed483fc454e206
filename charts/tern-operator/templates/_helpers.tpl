{{/*
Names, labels and the operator's RBAC rules, shared by every template of the chart.
*/}}

{{/* The chart's name, overridable with nameOverride. */}}
{{- define "tern-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name: the release name when it already contains the chart name, else
"RELEASE-CHART"; fullnameOverride replaces it. Kubernetes names are at most 63 characters.
*/}}
{{- define "tern-operator.fullname" -}}
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

{{/* "CHART-VERSION" for the helm.sh/chart label. */}}
{{- define "tern-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels that select the operator's pods; they never change after install. */}}
{{- define "tern-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tern-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object of the chart. */}}
{{- define "tern-operator.labels" -}}
helm.sh/chart: {{ include "tern-operator.chart" . }}
{{ include "tern-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: tern
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The operator's ServiceAccount. With serviceAccount.create false a name is required: falling back to
the namespace's "default" ServiceAccount would hand the operator's rights to every pod that uses it.
*/}}
{{- define "tern-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tern-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Lease used for leader election. */}}
{{- define "tern-operator.leaseName" -}}
{{- default (include "tern-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* An image reference from {repository, tag, digest}; the tag defaults to the chart's appVersion. */}}
{{- define "tern-operator.imageRef" -}}
{{- $image := index . 0 }}
{{- $chart := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/*
What the operator does to the API, and nothing more. Used by the ClusterRole (every namespace) and by
the Role (watchNamespace), so the two modes cannot drift apart. Leader election's Lease rights are
separate (templates/rbac.yaml): they hold only in the release namespace.
*/}}
{{- define "tern-operator.rules" -}}
# The Tern resources: read them; write only their status.
- apiGroups: ["tern.dev"]
  resources: ["mqttclusters", "mqttusers", "mqttacls"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["tern.dev"]
  resources: ["mqttclusters/status", "mqttusers/status", "mqttacls/status"]
  verbs: ["get", "patch", "update"]
# Owner references with blockOwnerDeletion (children of a cluster, a user's credentials Secret) need
# this where the OwnerReferencesPermissionEnforcement admission plugin is on (OpenShift, hardened
# clusters). The operator adds no finalizers itself.
- apiGroups: ["tern.dev"]
  resources: ["mqttclusters/finalizers", "mqttusers/finalizers"]
  verbs: ["update"]
# What an MqttCluster is made of: StatefulSet, Services, ConfigMap, Secrets (TLS, peer TLS, auth,
# admin token, users' credentials), PodDisruptionBudget, NetworkPolicy.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps", "secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# The NetworkPolicy is applied (server-side apply), watched to repair it, and deleted when turned
# off; never read alone or replaced.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Broker pods: found to reach their admin API (drain, reload); never changed.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Events on the Tern resources.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Used only where these CRDs exist: the Prometheus Operator and cert-manager. Applied (server-side
# apply creates or patches) and deleted, never listed or watched; finding the kinds is discovery,
# which needs no rule.
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}
