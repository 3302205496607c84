{{/*
The ovnk INI configuration (core/config.py: one [section] per settings dataclass, keys are
the field names with "-"). Built as section -> key -> value first so extraConfig can be
merged and checked, then printed: core sections in a fixed order, then plugin sections,
keys in alphabetical order.
*/}}
{{- define "ovnk.iniSections" -}}
{{- $v := .Values -}}
{{- $ini := dict -}}
{{- $_ := set $ini "default" (dict
    "mtu" $v.mtu
    "cluster-subnets" $v.clusterSubnets
    "encap-type" $v.encap.type
    "encap-port" $v.encap.port) -}}
{{- /* kubeconfig stays empty: the in-cluster service account. */ -}}
{{- $_ = set $ini "kubernetes" (dict "service-cidrs" $v.serviceCIDR) -}}
{{- $nb := dict -}}
{{- $sb := dict -}}
{{- if $v.ovnDb.ssl.enabled -}}
{{- /* The controller's certificate (nodes never mount it: they open no database connection
       themselves, and their ovn-controller uses the chassis certificate the agent issues). */ -}}
{{- $nb = dict "client-privkey" "/etc/ovnk/ssl/cert/tls.key" "client-cert" "/etc/ovnk/ssl/cert/tls.crt" "client-cacert" "/etc/ovnk/ssl/ca/ca.crt" -}}
{{- $sb = deepCopy $nb -}}
{{- end -}}
{{- $_ = set $ini "ovnnorth" $nb -}}
{{- $_ = set $ini "ovnsouth" $sb -}}
{{- $gw := dict "mode" $v.gatewayMode "vlan-id" $v.gateway.vlanId "nodeport-templates" $v.gateway.nodeportTemplates -}}
{{- if $v.gateway.interface }}{{ $_ = set $gw "interface" $v.gateway.interface }}{{ end -}}
{{- if $v.gateway.nextHop }}{{ $_ = set $gw "next-hop" $v.gateway.nextHop }}{{ end -}}
{{- $_ = set $ini "gateway" $gw -}}
{{- $_ = set $ini "logging" (dict "level" $v.logLevel) -}}
{{- /* install-crds false: the chart installs the enabled plugins' CRDs (templates/plugins) and grants the
       controller no write on CustomResourceDefinitions; the controller waits until they are served. */ -}}
{{- $le := $v.controller.leaderElection -}}
{{- /* The same rule as [controller] validate(): caught here, not in a crash-looping pod. */ -}}
{{- if or (ge (float64 $le.renewDeadline) (float64 $le.leaseDuration)) (ge (float64 $le.retryPeriod) (float64 $le.renewDeadline)) -}}
{{- fail "controller.leaderElection: retryPeriod < renewDeadline < leaseDuration is required" -}}
{{- end -}}
{{- $_ = set $ini "controller" (dict
    "metrics-bind-address" (printf "%s:%v" ($v.controller.metricsBindHost | default "0.0.0.0") $v.controller.metricsPort)
    "leader-election" true
    "install-crds" false
    "lease-namespace" .Release.Namespace
    "lease-name" (include "ovnk.leaseName" .)
    "lease-duration" $le.leaseDuration
    "renew-deadline" $le.renewDeadline
    "retry-period" $le.retryPeriod) -}}
{{- $health := printf "127.0.0.1:%v" $v.node.healthPort -}}
{{- /* /metrics: the node's address in the pod (OVNK_NODE_METRICS_BIND_ADDRESS, ovnk.metricsEnv); loopback here */ -}}
{{- $metrics := printf "%s:%v" ($v.node.metricsBindHost | default "127.0.0.1") $v.node.metricsPort -}}
{{- $node := dict "health-bind-address" $health "metrics-bind-address" $metrics -}}
{{- if $v.ovnDb.ssl.enabled -}}
{{- $_ = set $node "chassis-ca-cert" "/etc/ovnk/ssl/node-ca/tls.crt" -}}
{{- $_ = set $node "chassis-ca-key" "/etc/ovnk/ssl/node-ca/tls.key" -}}
{{- $_ = set $node "chassis-cert-dir" "/var/run/ovn/chassis-tls" -}}
{{- end -}}
{{- $_ = set $ini "node" $node -}}
{{- $_ = set $ini "cni" (dict "bin-dir" $v.cni.binDir "conf-dir" $v.cni.confDir "shim" $v.cni.shim) -}}
{{- $enabled := include "ovnk.enabledPlugins" . -}}
{{- $_ = set $ini "plugins" (dict "enabled" $enabled) -}}
{{- range $name := splitList "," $enabled -}}
{{- if $name -}}
{{- $settings := (index $v.plugins $name).settings | default dict -}}
{{- if not (kindIs "map" $settings) -}}
{{- fail (printf "plugins.%s.settings must be a map of INI key to value" $name) -}}
{{- end -}}
{{- if hasKey $ini $name -}}
{{- fail (printf "plugin name %q is also a core configuration section" $name) -}}
{{- end -}}
{{- $_ = set $ini $name (deepCopy $settings) -}}
{{- end -}}
{{- end -}}
{{- range $section, $keys := $v.extraConfig -}}
{{- if not (kindIs "map" $keys) -}}
{{- fail (printf "extraConfig.%s must be a map of INI key to value" $section) -}}
{{- end -}}
{{- $target := index $ini $section | default dict -}}
{{- range $key, $value := $keys -}}
{{- if hasKey $target $key -}}
{{- fail (printf "extraConfig.%s.%s is already set by the chart's values; change that value instead" $section $key) -}}
{{- end -}}
{{- $_ = set $target $key $value -}}
{{- end -}}
{{- $_ = set $ini $section $target -}}
{{- end -}}
{{- toJson $ini -}}
{{- end -}}

{{- define "ovnk.ini" -}}
{{- $ini := include "ovnk.iniSections" . | fromJson -}}
{{- $core := list "default" "kubernetes" "ovnnorth" "ovnsouth" "ovs" "gateway" "logging" "controller" "node" "cni" "plugins" -}}
{{- $order := $core -}}
{{- range $section, $_ := $ini -}}
{{- if not (has $section $core) -}}{{- $order = append $order $section -}}{{- end -}}
{{- end -}}
# ovnk configuration rendered by the Helm chart {{ .Chart.Name }}-{{ .Chart.Version }}.
# [ovnnorth]/[ovnsouth] address is not set here: each process looks up the addresses of the
# OVN database pods when it starts (hack/image/ovnk-lookup) and passes them as
# OVNK_OVNNORTH_ADDRESS / OVNK_OVNSOUTH_ADDRESS. [node] name comes from OVNK_NODE_NAME.
{{- range $section := $order }}
{{- if hasKey $ini $section }}

[{{ $section }}]
{{- range $key, $value := index $ini $section }}
{{ $key }} = {{ include "ovnk.iniValue" $value }}
{{- end }}
{{- end }}
{{- end }}
{{ end -}}
