{{/*
Names, labels, the image, and the plugin helpers shared by every template.
*/}}

{{- define "ovnk.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ovnk.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: include "ovnk.selector" (list $ "controller") */}}
{{- define "ovnk.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ $root.Chart.Name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "ovnk.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The image of the OVS DaemonSet: ovs.image.repository/tag, each defaulting to image.* (the same image). */}}
{{- define "ovnk.ovsImage" -}}
{{- $repository := .Values.ovs.image.repository | default .Values.image.repository -}}
{{- $tag := .Values.ovs.image.tag | default (.Values.image.tag | default .Chart.AppVersion) -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{- define "ovnk.configName" -}}{{ include "ovnk.fullname" . }}-config{{- end -}}
{{- define "ovnk.dbName" -}}{{ include "ovnk.fullname" . }}-ovn-db{{- end -}}
{{- define "ovnk.leaseName" -}}{{ include "ovnk.fullname" . }}-controller{{- end -}}

{{- define "ovnk.dbReplicas" -}}
{{- if eq .Values.ovnDb.mode "raft" -}}{{ .Values.ovnDb.raft.replicas }}{{- else -}}1{{- end -}}
{{- end -}}

{{- define "ovnk.dbScheme" -}}
{{- if .Values.ovnDb.ssl.enabled -}}ssl{{- else -}}tcp{{- end -}}
{{- end -}}

{{/*
Names of the enabled plugins, comma separated, in alphabetical order (the load order).
A plugin is enabled when .Values.plugins.<name>.enabled is true; nothing here knows any
plugin by name.
*/}}
{{- define "ovnk.enabledPlugins" -}}
{{- $names := list -}}
{{- range $name, $plugin := .Values.plugins -}}
{{- if and (kindIs "map" $plugin) $plugin.enabled -}}
{{- if not (regexMatch "^[A-Za-z0-9_.-]+$" $name) -}}
{{- fail (printf "plugins.%s: a plugin name may only hold letters, digits, '_', '.' and '-'" $name) -}}
{{- end -}}
{{- $names = append $names $name -}}
{{- end -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{/*
The CRDs of the enabled plugins as a JSON list of {"source", "text"}:
- a first-party plugin's files, files/plugins/<name>/crds/*.yaml (files/plugins is a symlink to
  the repository's plugins/ folder, so these are the plugins' own files, not copies);
- a third-party plugin's, given as values: plugins.<name>.crds.<key> holds one CRD document, as
  text (helm install --set-file plugins.hello.crds.hellos=hellos.yaml) or as a map.
*/}}
{{- define "ovnk.pluginCrds" -}}
{{- $root := . -}}
{{- $out := list -}}
{{- range $name := splitList "," (include "ovnk.enabledPlugins" .) -}}
{{- if $name -}}
{{- range $path, $_ := $root.Files.Glob (printf "files/plugins/%s/crds/*.yaml" $name) -}}
{{- $out = append $out (dict "source" $path "text" ($root.Files.Get $path)) -}}
{{- end -}}
{{- $given := (index $root.Values.plugins $name).crds | default dict -}}
{{- range $key := keys $given | sortAlpha -}}
{{- $value := index $given $key -}}
{{- $text := ternary (toYaml $value) (toString $value) (kindIs "map" $value) -}}
{{- $out = append $out (dict "source" (printf "plugins.%s.crds.%s" $name $key) "text" $text) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
RBAC rules for the custom resources of the enabled plugins' CRDs.
include "ovnk.pluginCrdRules" (list $ (list "get" "list" "watch"))
*/}}
{{- define "ovnk.pluginCrdRules" -}}
{{- $root := index . 0 -}}
{{- $verbs := index . 1 -}}
{{- range $item := include "ovnk.pluginCrds" $root | fromJsonArray -}}
{{- $crd := fromYaml $item.text }}
# {{ $item.source }}
- apiGroups: [{{ $crd.spec.group | quote }}]
  resources: [{{ $crd.spec.names.plural | quote }}]
  verbs: {{ toJson $verbs }}
{{- if has "patch" $verbs }}
- apiGroups: [{{ $crd.spec.group | quote }}]
  resources: [{{ printf "%s/status" $crd.spec.names.plural | quote }}]
  verbs: ["patch"]
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
RBAC rules a first-party plugin needs beyond its CRDs, from its own folder:
files/plugins/<name>/rbac.yaml holds {controller: [rules], node: [rules]} (Kubernetes
PolicyRules), added to that component's ClusterRole while the plugin is enabled.
include "ovnk.pluginExtraRules" (list $ "node")
*/}}
{{- define "ovnk.pluginExtraRules" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- range $name := splitList "," (include "ovnk.enabledPlugins" $root) -}}
{{- if $name -}}
{{- $path := printf "files/plugins/%s/rbac.yaml" $name -}}
{{- $rules := index ($root.Files.Get $path | fromYaml) $component -}}
{{- if $rules }}
# {{ $path }} ({{ $component }})
{{ toYaml $rules }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* One INI value: lists joined with ",", booleans as true/false, no line breaks. */}}
{{- define "ovnk.iniValue" -}}
{{- $text := "" -}}
{{- if kindIs "slice" . -}}
{{- $text = join "," . -}}
{{- else if kindIs "map" . -}}
{{- fail (printf "INI value %v is a map; only scalars and lists fit in one INI key" .) -}}
{{- else if kindIs "invalid" . -}}
{{- $text = "" -}}
{{- else if kindIs "float64" . -}}
{{- /* YAML numbers arrive as float64; 1400 must not become 1.4e+03 */ -}}
{{- if eq (float64 (int64 .)) . -}}{{- $text = printf "%d" (int64 .) -}}{{- else -}}{{- $text = toString . -}}{{- end -}}
{{- else -}}
{{- $text = toString . -}}
{{- end -}}
{{- if or (contains "\n" $text) (contains "\r" $text) -}}
{{- fail (printf "INI value %q holds a line break" $text) -}}
{{- end -}}
{{- $text -}}
{{- end -}}

{{/* Tolerations of pods that must run before the node network is ready. */}}
{{- define "ovnk.bootstrapTolerations" -}}
- key: node-role.kubernetes.io/control-plane
  operator: Exists
  effect: NoSchedule
- key: node-role.kubernetes.io/master
  operator: Exists
  effect: NoSchedule
- key: node.kubernetes.io/not-ready
  operator: Exists
- key: node.kubernetes.io/network-unavailable
  operator: Exists
  effect: NoSchedule
{{- end -}}

{{/* Node affinity for control-plane nodes (either label, old or new). */}}
{{- define "ovnk.controlPlaneAffinity" -}}
requiredDuringSchedulingIgnoredDuringExecution:
  nodeSelectorTerms:
    - matchExpressions:
        - {key: node-role.kubernetes.io/control-plane, operator: Exists}
    - matchExpressions:
        - {key: node-role.kubernetes.io/master, operator: Exists}
{{- end -}}

{{/*
Environment shared by the ovnk containers: the API server address (see values apiServer)
and where the OVN databases are looked up (hack/image/ovnk-lookup).
*/}}
{{/* [<component>] metrics-bind-address: the node's own address (status.hostIP, = POD_IP on the host
network) as ovn-kubernetes binds to K8S_NODE_IP, unless <component>.metricsBindHost is set.
include "ovnk.metricsEnv" (list $ "controller"); after ovnk.commonEnv (it uses $(POD_IP)). */}}
{{- define "ovnk.metricsEnv" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $values := index $root.Values $component -}}
- name: OVNK_{{ upper $component }}_METRICS_BIND_ADDRESS
  value: {{ printf "%s:%v" ($values.metricsBindHost | default "$(POD_IP)") $values.metricsPort | quote }}
{{- end -}}

{{- define "ovnk.commonEnv" -}}
{{- if .Values.apiServer.host }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ .Values.apiServer.host | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ .Values.apiServer.port | quote }}
{{- end }}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef: {fieldPath: metadata.namespace}
- name: POD_NAME
  valueFrom:
    fieldRef: {fieldPath: metadata.name}
- name: POD_IP
  valueFrom:
    fieldRef: {fieldPath: status.podIP}
- name: OVN_DB_SERVICE
  value: {{ include "ovnk.dbName" . }}
- name: OVN_DB_REPLICAS
  value: {{ include "ovnk.dbReplicas" . | quote }}
- name: OVN_DB_SCHEME
  value: {{ include "ovnk.dbScheme" . }}
- name: OVN_NB_PORT
  value: {{ .Values.ovnDb.nbPort | quote }}
- name: OVN_SB_PORT
  value: {{ .Values.ovnDb.sbPort | quote }}
- name: OVN_DB_LOOKUP_TIMEOUT
  value: {{ .Values.ovnDb.lookupTimeout | quote }}
{{- end -}}

{{/*
TLS files of the database pods' containers (their server certificate, the central CA, and for
the Southbound the node CA that signs the chassis certificates): include "ovnk.sslEnv" (list $ "sb")
*/}}
{{- define "ovnk.sslEnv" -}}
{{- $root := index . 0 -}}
{{- if $root.Values.ovnDb.ssl.enabled }}
- name: OVN_SSL_KEY
  value: /etc/ovnk/ssl/cert/tls.key
- name: OVN_SSL_CERT
  value: /etc/ovnk/ssl/cert/tls.crt
- name: OVN_SSL_CA
  value: /etc/ovnk/ssl/ca/ca.crt
{{- if eq (index . 1) "sb" }}
- name: OVN_SSL_NODE_CA
  value: /etc/ovnk/ssl/node-ca/tls.crt
{{- end }}
{{- end }}
{{- end -}}

{{/*
Mounts of the TLS volumes "ovnk.sslVolumes" makes: include "ovnk.sslMounts" (list $ "cert" "ca" ...)
with the volumes a container needs: cert (its own certificate), ca (the central CA), node-ca.
*/}}
{{- define "ovnk.sslMounts" -}}
{{- $root := index . 0 -}}
{{- if $root.Values.ovnDb.ssl.enabled }}
{{- range $what := rest . }}
- {name: ssl-{{ $what }}, mountPath: /etc/ovnk/ssl/{{ $what }}, readOnly: true}
{{- end }}
{{- end }}
{{- end -}}

{{/*
TLS volumes of a pod: include "ovnk.sslVolumes" (list $ "server"|"client"|"node"). Every pod gets
the central CA certificate (never its key); the database pods their server certificate and the
node CA's certificate; the controller its client certificate; the nodes the node CA, key
included, to issue their chassis certificates. A pod references only the Secrets it needs: the
kubelet may read exactly those.
*/}}
{{- define "ovnk.sslVolumes" -}}
{{- $root := index . 0 -}}
{{- $who := index . 1 -}}
{{- $ssl := $root.Values.ovnDb.ssl -}}
{{- if $ssl.enabled }}
- name: ssl-ca
  secret:
    secretName: {{ $ssl.caSecret }}
    items: [{key: ca.crt, path: ca.crt}]
    defaultMode: 0444
{{- if ne $who "node" }}
- name: ssl-cert
  secret:
    secretName: {{ ternary $ssl.serverSecret $ssl.clientSecret (eq $who "server") }}
    defaultMode: 0440
{{- end }}
{{- if eq $who "server" }}
- name: ssl-node-ca
  secret:
    secretName: {{ $ssl.nodeCaSecret }}
    items: [{key: tls.crt, path: tls.crt}]
    defaultMode: 0444
{{- else if eq $who "node" }}
- name: ssl-node-ca
  secret:
    secretName: {{ $ssl.nodeCaSecret }}
    defaultMode: 0400
{{- end }}
{{- end }}
{{- end -}}

{{/* Pods restart when the configuration changes. */}}
{{- define "ovnk.configChecksum" -}}
checksum/config: {{ include "ovnk.ini" . | sha256sum }}
{{- end -}}

{{- define "ovnk.pdbApiVersion" -}}
{{- if semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version -}}policy/v1{{- else -}}policy/v1beta1{{- end -}}
{{- end -}}
