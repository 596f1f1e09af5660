{{/* Names, labels and the per-engine settings every template shares. */}}

{{- define "proxyvision.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: <release>-proxyvision, or the release name when it already says proxyvision. */}}
{{- define "proxyvision.fullname" -}}
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

{{- define "proxyvision.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "proxyvision.selectorLabels" -}}
app.kubernetes.io/name: {{ include "proxyvision.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "proxyvision.labels" -}}
helm.sh/chart: {{ include "proxyvision.chart" . }}
{{ include "proxyvision.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: proxyvision
{{- end }}

{{/* Pod labels: no chart or app version, so a chart bump alone does not restart (and reload) engines. */}}
{{- define "proxyvision.podLabels" -}}
{{ include "proxyvision.selectorLabels" . }}
app.kubernetes.io/part-of: proxyvision
{{- end }}

{{- define "proxyvision.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "proxyvision.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "proxyvision.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "proxyvision.configMapName" -}}
{{- printf "%s-config" (include "proxyvision.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "proxyvision.modelCacheClaimName" -}}
{{- if eq .Values.modelCache.type "existingClaim" }}
{{- required "modelCache.existingClaim is required when modelCache.type is existingClaim" .Values.modelCache.existingClaim }}
{{- else }}
{{- printf "%s-model-cache" (include "proxyvision.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Where every service reads models.yaml (the ConfigMap's mount). */}}
{{- define "proxyvision.configDir" -}}/etc/proxyvision{{- end }}
{{- define "proxyvision.configPath" -}}{{ include "proxyvision.configDir" . }}/models.yaml{{- end }}

{{/* Pods get the preStop pause, the drain and a margin for the process to exit (and free the GPU). */}}
{{- define "proxyvision.terminationGracePeriodSeconds" -}}
{{- add (int64 .Values.preStopSleepSeconds) (int64 .Values.drainGraceSeconds) 15 }}
{{- end }}

{{/*
A model name as a DNS label part: lower case, runs of other characters as "-".
*/}}
{{- define "proxyvision.slug" -}}
{{- regexReplaceAll "[^a-z0-9]+" (lower .) "-" | trimAll "-" }}
{{- end }}

{{/*
The name of an engine's Deployment, Service, PDB and HPA: <fullname>-<text|vision>-<model slug>, at most
63 characters (Service names are DNS labels); longer ones keep 54 characters and a hash of the whole.
*/}}
{{- define "proxyvision.engineName" -}}
{{- $root := index . 0 }}
{{- $full := printf "%s-%s-%s" (include "proxyvision.fullname" $root) (index . 1) (index . 2) }}
{{- if le (len $full) 63 }}
{{- $full }}
{{- else }}
{{- printf "%s-%s" ($full | trunc 54 | trimSuffix "-") ($full | sha256sum | trunc 8) }}
{{- end }}
{{- end }}

{{/*
engineDefaults with engines.<model> on top: an override key replaces the default; maps are merged one
level deep (so `resources: {requests: ...}` keeps the default GPU limit). Returns JSON.
*/}}
{{- define "proxyvision.engineSettings" -}}
{{- $root := index . 0 }}
{{- $out := deepCopy $root.Values.engineDefaults }}
{{- $override := index $root.Values.engines (index . 1) | default dict }}
{{- range $key, $value := $override }}
{{- if and (kindIs "map" $value) (kindIs "map" (index $out $key)) }}
{{- $merged := deepCopy (index $out $key) }}
{{- range $k, $v := $value }}
{{- $_ := set $merged $k $v }}
{{- end }}
{{- $_ := set $out $key $merged }}
{{- else }}
{{- $_ := set $out $key $value }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
Every engine the release runs, as JSON {"engines": [...]}: per model its kind (text or vision), resource
name, gRPC port, in-cluster address (dns:///<headless service>.<namespace>.svc.<domain>:<port>: the
gateway resolves every ready pod and balances over them) and merged settings. Fails on a mistake the
schema cannot see.
*/}}
{{- define "proxyvision.engines" -}}
{{- $root := . }}
{{- $cacheUrl := include "proxyvision.captionCacheUrl" . }}
{{- $engines := list }}
{{- $names := list }}
{{- $modelNames := list }}
{{- range $entry := .Values.modelsConfig.models }}
{{- $vision := eq (dig "capabilities" "vision_mode" "disabled" $entry) "proxy" }}
{{- $kind := ternary "vision" "text" $vision }}
{{- $slug := include "proxyvision.slug" $entry.name }}
{{- if not $slug }}
{{- fail (printf "modelsConfig.models: the name %q has no letter or digit to name its engine after" $entry.name) }}
{{- end }}
{{- $name := include "proxyvision.engineName" (list $root $kind $slug) }}
{{- if has $name $names }}
{{- fail (printf "modelsConfig.models: %q gives the engine name %s that another model already has; rename one" $entry.name $name) }}
{{- end }}
{{- $port := int64 (ternary $root.Values.ports.visionEngine $root.Values.ports.textEngine $vision) }}
{{- $host := printf "%s.%s.svc.%s" $name $root.Release.Namespace $root.Values.clusterDomain }}
{{- $address := printf "dns:///%s:%d" $host $port }}
{{- $settings := include "proxyvision.engineSettings" (list $root $entry.name) | fromJson }}
{{- if and $vision $cacheUrl }}
{{- $entry = include "proxyvision.withSharedCache" (list $root $entry $cacheUrl) | fromJson }}
{{- end }}
{{- $autoscaling := $settings.autoscaling }}
{{- if and $autoscaling.enabled (not $autoscaling.metrics) (not (dig "requests" "cpu" "" $settings.resources)) }}
{{- fail (printf "engines.%s.autoscaling: the default CPU-utilization target needs resources.requests.cpu; set one, or give autoscaling.metrics" $entry.name) }}
{{- end }}
{{- $engines = append $engines (dict "model" $entry.name "kind" $kind "name" $name "port" $port "host" $host "address" $address "entry" $entry "settings" $settings) }}
{{- $names = append $names $name }}
{{- $modelNames = append $modelNames $entry.name }}
{{- end }}
{{- range $model, $_ := .Values.engines }}
{{- if not (has $model $modelNames) }}
{{- fail (printf "engines.%s: there is no model named %q in modelsConfig.models" $model $model) }}
{{- end }}
{{- end }}
{{- toJson (dict "engines" $engines) }}
{{- end }}

{{/* The shared caption cache (captionCache): the chart's Redis is <fullname>-caption-cache. */}}
{{- define "proxyvision.captionCacheName" -}}
{{- printf "%s-caption-cache" (include "proxyvision.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "proxyvision.captionCacheLabels" -}}
app.kubernetes.io/component: caption-cache
{{- end }}

{{/* The URL the vision engines use: the chart's Redis Service, captionCache.url, or "" (no shared cache). */}}
{{- define "proxyvision.captionCacheUrl" -}}
{{- $cache := .Values.captionCache }}
{{- if and $cache.redis.enabled $cache.url }}
{{- fail "captionCache: set redis.enabled (the chart runs a Redis) or url (an existing one), not both" }}
{{- end }}
{{- if $cache.redis.enabled }}
{{- printf "redis://%s.%s.svc.%s:%d/0" (include "proxyvision.captionCacheName" .) .Release.Namespace .Values.clusterDomain (int64 $cache.redis.port) }}
{{- else }}
{{- $cache.url }}
{{- end }}
{{- end }}

{{/* A proxy vision model's entry with capabilities.vision_proxy.shared_cache written from captionCache.
Argument: (root, entry, url); returns JSON. */}}
{{- define "proxyvision.withSharedCache" -}}
{{- $root := index . 0 }}
{{- $entry := deepCopy (index . 1) }}
{{- $proxy := get $entry.capabilities "vision_proxy" | default dict }}
{{- if hasKey $proxy "shared_cache" }}
{{- fail (printf "modelsConfig.models (%s): vision_proxy.shared_cache is written by captionCache; leave it out, or turn captionCache off and set it yourself" $entry.name) }}
{{- end }}
{{- $shared := dict "url" (index . 2) "ttl_secs" (int64 $root.Values.captionCache.ttlSecs) }}
{{- $_ := set $proxy "shared_cache" $shared }}
{{- $_ := set $entry.capabilities "vision_proxy" $proxy }}
{{- toJson $entry }}
{{- end }}

{{- define "proxyvision.engineLabels" -}}
app.kubernetes.io/component: {{ .kind }}-engine
proxyvision.io/engine: {{ .name }}
{{- end }}

{{/* The models.yaml every service reads: modelsConfig with each model's endpoint filled in, and the API
key file when gateway.apiKeys is used. */}}
{{- define "proxyvision.modelsYaml" -}}
{{- $engines := (include "proxyvision.engines" . | fromJson).engines }}
{{- $models := list }}
{{- range $engine := $engines }}
{{- $models = append $models (merge (dict "endpoint" $engine.address) $engine.entry) }}
{{- end }}
{{- $config := merge (dict "models" $models) (omit .Values.modelsConfig "models") }}
{{- $gateway := deepCopy (.Values.modelsConfig.gateway | default dict) }}
{{- if $gateway.api_keys }}
{{- fail "modelsConfig.gateway.api_keys: keys in the ConfigMap could be read by anyone who may read ConfigMaps; put them in a Secret (gateway.apiKeys)" }}
{{- end }}
{{- if $gateway.api_keys_protect_health }}
{{- fail "modelsConfig.gateway.api_keys_protect_health: the kubelet's probes (and the ServiceMonitor) cannot send a key from a Secret; keep /health, /ready and /metrics open and limit who reaches them instead" }}
{{- end }}
{{- if include "proxyvision.apiKeysEnabled" . }}
{{- if $gateway.api_keys_file }}
{{- fail "modelsConfig.gateway.api_keys_file: the chart sets it from gateway.apiKeys; leave it out" }}
{{- end }}
{{- $_ := set $gateway "api_keys_file" (include "proxyvision.apiKeysPath" .) }}
{{- $_ := set $config "gateway" $gateway }}
{{- end }}
{{- if .Values.modelsConfig.tls }}
{{- fail "modelsConfig.tls: the chart writes it from tls (Secrets mounted into the pods); set tls.* instead" }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- $_ := set $config "tls" (include "proxyvision.tlsSection" . | fromYaml) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* TLS between gateway and engines: where the Secrets are mounted, and the tls: section pointing there.
Each pod mounts only its side's files (engines: their certificate, and the CA under mTLS; the gateway: the
CA and its client certificate); each side reads only its keys of the shared section. */}}
{{- define "proxyvision.tlsDir" -}}/etc/proxyvision-tls{{- end }}
{{- define "proxyvision.tlsSection" -}}
{{- $tls := .Values.tls }}
{{- $dir := include "proxyvision.tlsDir" . }}
{{- if not $tls.serverSecret }}
{{- fail "tls.serverSecret: TLS needs the engines' certificate (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- if and $tls.requireClientCert (not $tls.clientSecret) }}
{{- fail "tls.clientSecret: with tls.requireClientCert the gateway needs a client certificate (a kubernetes.io/tls Secret)" }}
{{- end }}
ca: {{ $dir }}/ca/ca.crt
server_cert: {{ $dir }}/server/tls.crt
server_key: {{ $dir }}/server/tls.key
{{- if $tls.clientSecret }}
client_cert: {{ $dir }}/client/tls.crt
client_key: {{ $dir }}/client/tls.key
{{- end }}
require_client_cert: {{ $tls.requireClientCert }}
{{- with $tls.serverName }}
server_name: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Volumes of one side ("engine" or "gateway"): list of (root, side). */}}
{{- define "proxyvision.tlsVolumes" -}}
{{- $root := index . 0 }}{{- $side := index . 1 }}
{{- $tls := $root.Values.tls }}
{{- if or (eq $side "gateway") $tls.requireClientCert }}
- name: tls-ca
  secret:
    secretName: {{ $tls.caSecret | default $tls.serverSecret }}
    items:
      - key: {{ $tls.caKey }}
        path: ca.crt
{{- end }}
{{- if eq $side "engine" }}
- name: tls-server
  secret:
    secretName: {{ $tls.serverSecret }}
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
    defaultMode: 288  # 0440: the pod's group (fsGroup) may read the key, nobody else
{{- else if $tls.clientSecret }}
- name: tls-client
  secret:
    secretName: {{ $tls.clientSecret }}
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
    defaultMode: 288
{{- end }}
{{- end }}

{{- define "proxyvision.tlsVolumeMounts" -}}
{{- $root := index . 0 }}{{- $side := index . 1 }}
{{- $tls := $root.Values.tls }}
{{- $dir := include "proxyvision.tlsDir" $root }}
{{- if or (eq $side "gateway") $tls.requireClientCert }}
- name: tls-ca
  mountPath: {{ $dir }}/ca
  readOnly: true
{{- end }}
{{- if eq $side "engine" }}
- name: tls-server
  mountPath: {{ $dir }}/server
  readOnly: true
{{- else if $tls.clientSecret }}
- name: tls-client
  mountPath: {{ $dir }}/client
  readOnly: true
{{- end }}
{{- end }}

{{/* An engine's probe check: native gRPC, or with TLS on an exec of services.common.health_check (the
kubelet's gRPC probe cannot speak TLS). Argument: (root, engine). */}}
{{- define "proxyvision.engineProbeCheck" -}}
{{- $root := index . 0 }}{{- $engine := index . 1 }}
{{- if $root.Values.tls.enabled }}
exec:
  command: ["python", "-m", "services.common.health_check", "--models-config", {{ include "proxyvision.configPath" $root | quote }},
            "--port", {{ $engine.port | int64 | quote }}, "--server-name", {{ $root.Values.tls.serverName | default $engine.host | quote }}]
{{- else }}
grpc:
  port: {{ $engine.port | int64 }}
{{- end }}
{{- end }}

{{/* API keys: a non-empty string when gateway.apiKeys names or creates a Secret. */}}
{{- define "proxyvision.apiKeysEnabled" -}}
{{- if or .Values.gateway.apiKeys.create .Values.gateway.apiKeys.existingSecret }}true{{ end }}
{{- end }}

{{- define "proxyvision.apiKeysSecretName" -}}
{{- if .Values.gateway.apiKeys.existingSecret }}
{{- .Values.gateway.apiKeys.existingSecret }}
{{- else }}
{{- printf "%s-api-keys" (include "proxyvision.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* The Secret is mounted as a directory (never with subPath, which would stop the kubelet's updates). */}}
{{- define "proxyvision.apiKeysDir" -}}/etc/proxyvision-api-keys{{- end }}
{{- define "proxyvision.apiKeysPath" -}}{{ include "proxyvision.apiKeysDir" . }}/api-keys{{- end }}

{{/* Volumes and mounts every pod has: the config, a writable /tmp. */}}
{{- define "proxyvision.commonVolumes" -}}
- name: config
  configMap:
    name: {{ include "proxyvision.configMapName" . }}
- name: tmp
  emptyDir: {}
{{- end }}

{{- define "proxyvision.commonVolumeMounts" -}}
- name: config
  mountPath: {{ include "proxyvision.configDir" . }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "proxyvision.modelCacheVolume" -}}
- name: model-cache
{{- if eq .Values.modelCache.type "emptyDir" }}
  emptyDir:
    {{- with .Values.modelCache.sizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
{{- else }}
  persistentVolumeClaim:
    claimName: {{ include "proxyvision.modelCacheClaimName" . }}
{{- end }}
{{- end }}

{{/* Environment every service shares. */}}
{{- define "proxyvision.commonEnv" -}}
- name: PROXYVISION_DRAIN_GRACE_SECS
  value: {{ int64 .Values.drainGraceSeconds | quote }}
- name: LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: PYTHONUNBUFFERED
  value: "1"
- name: HOME
  value: /tmp
{{- end }}

{{/* A probe from its settings (periodSeconds, failureThreshold, timeoutSeconds) and its check. */}}
{{- define "proxyvision.probeTiming" -}}
periodSeconds: {{ int64 .periodSeconds }}
failureThreshold: {{ int64 .failureThreshold }}
timeoutSeconds: {{ int64 .timeoutSeconds }}
{{- end }}

{{/* An autoscaling/v2 HPA spec body for `target` (a Deployment name) and its settings. */}}
{{- define "proxyvision.hpaSpec" -}}
scaleTargetRef:
  apiVersion: apps/v1
  kind: Deployment
  name: {{ .target }}
minReplicas: {{ int64 .settings.minReplicas }}
maxReplicas: {{ int64 .settings.maxReplicas }}
metrics:
{{- if .settings.metrics }}
  {{- toYaml .settings.metrics | nindent 2 }}
{{- else }}
  - type: Resource
    resource:
      name: cpu
      target:
        type: Utilization
        averageUtilization: {{ int64 .settings.targetCPUUtilizationPercentage }}
{{- end }}
{{- with .settings.behavior }}
behavior:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
