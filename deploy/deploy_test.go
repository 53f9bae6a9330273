// Tests of the deployment files that can run without a container engine or a Kubernetes
// cluster: every file parses, names kinds and API versions that exist, and tells the binaries
// only what their real help lists; the configuration they give `interlock serve` loads.
package deploy_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v2"

	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/testdeps"
)

// help is what a binary's real help says it accepts.
type help struct {
	flags map[string]bool // without dashes
	env   map[string]bool
}

var (
	helpOnce            sync.Once
	helpErr             error
	serveHelp, demoHelp help
)

// helps builds cmd/interlock and cmd/interlock-demo and reads `interlock serve --help` and
// `interlock-demo -h`.
func helps(t *testing.T) (serve, demo help) {
	t.Helper()
	helpOnce.Do(func() {
		dir, err := os.MkdirTemp("", "interlock-deploy-test")
		if err != nil {
			helpErr = err
			return
		}
		defer os.RemoveAll(dir)
		read := func(pkg string, args ...string) (help, error) {
			bin := filepath.Join(dir, path.Base(pkg))
			if out, err := exec.Command("go", "build", "-o", bin, "github.com/interlock-dev/interlock/"+pkg).CombinedOutput(); err != nil {
				return help{}, fmt.Errorf("build %s: %v\n%s", pkg, err, out)
			}
			// Help exits non-zero with some flag packages; what it prints is what counts.
			out, _ := exec.Command(bin, args...).CombinedOutput()
			return parseHelp(out), nil
		}
		if serveHelp, helpErr = read("cmd/interlock", "serve", "--help"); helpErr != nil {
			return
		}
		demoHelp, helpErr = read("cmd/interlock-demo", "-h")
	})
	if helpErr != nil {
		t.Fatal(helpErr)
	}
	if len(serveHelp.flags) < 10 || len(demoHelp.flags) < 5 {
		t.Fatalf("help lists too few flags: serve %v, demo %v", serveHelp.flags, demoHelp.flags)
	}
	return serveHelp, demoHelp
}

var (
	helpFlag = regexp.MustCompile(`(?m)^\s+-{1,2}([a-z0-9][a-z0-9-]*)`)
	helpEnv  = regexp.MustCompile(`\bINTERLOCK_[A-Z0-9_]+\b`)
)

func parseHelp(out []byte) help {
	h := help{flags: map[string]bool{}, env: map[string]bool{}}
	for _, m := range helpFlag.FindAllSubmatch(out, -1) {
		h.flags[string(m[1])] = true
	}
	for _, m := range helpEnv.FindAll(out, -1) {
		h.env[string(m)] = true
	}
	return h
}

// checkArgs fails the test for every flag in args that h does not list, and returns the
// flags' values by name.
func checkArgs(t *testing.T, where string, args []string, h help) map[string]string {
	t.Helper()
	values := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !h.flags[name] {
			t.Errorf("%s: flag %s is not in the help", where, a)
			continue
		}
		if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			value = args[i+1]
			i++
		}
		values[name] = value
	}
	return values
}

// loadServe checks that `interlock serve` accepts args and env as its configuration.
func loadServe(t *testing.T, where string, args []string, env map[string]string) config.Config {
	t.Helper()
	cfg, err := config.Load(args, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatalf("%s: interlock serve refuses its configuration: %v", where, err)
	}
	return cfg
}

// interpolate fills compose's ${NAME:?message} and ${NAME} with a stand-in value.
var composeVar = regexp.MustCompile(`\$\{([A-Z0-9_]+)(:?[?-][^}]*)?\}`)

func interpolate(s string) string {
	return composeVar.ReplaceAllString(s, "test-${1}-0123456789")
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       any               `yaml:"build"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	Secrets     []string          `yaml:"secrets"`
	ReadOnly    bool              `yaml:"read_only"`
	DependsOn   []string          `yaml:"depends_on"`
}

type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Secrets  map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
	Volumes map[string]any `yaml:"volumes"`
}

// fromMetricsWork are files the service-metrics work brings: until they are in the tree, a
// mount of them is noted, not failed.
var fromMetricsWork = []string{"prometheus/interlock-rules.yml", "grafana"}

func TestCompose(t *testing.T) {
	serve, demo := helps(t)
	raw, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]any
	if err := yaml.Unmarshal(raw, &top); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	for k := range top {
		if !strings.HasPrefix(k, "x-") && !slices.Contains([]string{"name", "services", "secrets", "volumes"}, k) {
			t.Errorf("compose.yaml: unknown top-level key %q", k)
		}
	}
	var c composeFile
	if err := yaml.Unmarshal([]byte(interpolate(string(raw))), &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	var names []string
	for name := range c.Services {
		names = append(names, name)
	}
	slices.Sort(names)
	want := []string{"demo", "grafana", "interlock-1", "interlock-2", "nats-1", "nats-2", "nats-3", "prometheus"}
	if !slices.Equal(names, want) {
		t.Fatalf("services %v, want %v", names, want)
	}

	conf, err := os.ReadFile("nats-cluster.conf")
	if err != nil {
		t.Fatal(err)
	}
	confVars := natsConfVars(conf)
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			host, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(host, ".") {
				if _, ok := c.Volumes[host]; !ok {
					t.Errorf("%s: volume %s is not declared", name, host)
				}
				continue
			}
			if _, err := os.Stat(host); err != nil {
				if slices.Contains(fromMetricsWork, strings.TrimPrefix(host, "./")) {
					t.Logf("%s: %s is not in the tree yet (it comes with the service metrics)", name, host)
					continue
				}
				t.Errorf("%s: mounts %s: %v", name, host, err)
			}
		}
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s: port %s is published beyond loopback", name, p)
			}
		}
		for _, sec := range s.Secrets {
			if _, ok := c.Secrets[sec]; !ok {
				t.Errorf("%s: secret %s is not declared", name, sec)
			}
		}
		for _, d := range s.DependsOn {
			if _, ok := c.Services[d]; !ok {
				t.Errorf("%s: depends on unknown service %s", name, d)
			}
		}
		switch {
		case strings.HasPrefix(name, "nats-"):
			if !slices.Equal(s.Command, []string{"-c", "/etc/nats/nats-cluster.conf"}) {
				t.Errorf("%s: command %v does not run the cluster config", name, s.Command)
			}
			for v := range confVars {
				if _, ok := s.Environment[v]; !ok {
					t.Errorf("%s: nats-cluster.conf uses $%s, which is not set", name, v)
				}
			}
		case strings.HasPrefix(name, "interlock-"):
			if len(s.Entrypoint) != 0 || len(s.Command) == 0 || s.Command[0] != "serve" {
				t.Fatalf("%s: runs %v %v, want the image's interlock serve", name, s.Entrypoint, s.Command)
			}
			flags := checkArgs(t, name, s.Command[1:], serve)
			for env := range s.Environment {
				if !serve.env[env] {
					t.Errorf("%s: environment variable %s is not in interlock serve --help", name, env)
				}
			}
			cfg := loadServe(t, name, s.Command[1:], s.Environment)
			if cfg.Replicas != 3 || cfg.NATSURL == "" || flags["signing-key"] == "" {
				t.Errorf("%s: replicas %d, nats url %q, signing key %q", name, cfg.Replicas, cfg.NATSURL, flags["signing-key"])
			}
			if !s.ReadOnly {
				t.Errorf("%s: the root filesystem is writable", name)
			}
			for _, raw := range strings.Split(cfg.NATSURL, ",") {
				u, err := url.Parse(raw)
				if err != nil {
					t.Errorf("%s: nats url %q: %v", name, raw, err)
					continue
				}
				if _, ok := c.Services[u.Hostname()]; !ok || !strings.HasPrefix(u.Hostname(), "nats-") {
					t.Errorf("%s: nats url names %q, not a NATS service", name, u.Hostname())
				}
			}
		case name == "demo":
			if len(s.Entrypoint) != 1 || path.Base(s.Entrypoint[0]) != "interlock-demo" {
				t.Fatalf("demo: entrypoint %v", s.Entrypoint)
			}
			flags := checkArgs(t, name, s.Command, demo)
			if flags["flag"] == "" || flags["nats-url"] == "" {
				t.Errorf("demo: flags %v lack --flag or --nats-url", flags)
			}
			for env := range s.Environment {
				if !demo.env[env] {
					t.Errorf("demo: environment variable %s is not in its help", env)
				}
			}
		}
	}
	for name, sec := range c.Secrets {
		if !strings.HasPrefix(sec.File, "./secrets/") {
			t.Errorf("secret %s: %s is outside deploy/secrets (which .gitignore keeps out of git)", name, sec.File)
		}
	}
	checkComposePrometheus(t, c)
}

// natsConfVars returns the $NAME variables a NATS config file reads from the environment:
// those outside comments and quoted strings that the file does not define itself.
func natsConfVars(conf []byte) map[string]bool {
	code := regexp.MustCompile(`(?m)#.*$|"[^"]*"`).ReplaceAll(conf, nil)
	defined := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^([A-Z][A-Z0-9_]*)\s*[:=]`).FindAllSubmatch(code, -1) {
		defined[string(m[1])] = true
	}
	vars := map[string]bool{}
	for _, m := range regexp.MustCompile(`\$([A-Z][A-Z0-9_]*)`).FindAllSubmatch(code, -1) {
		if !defined[string(m[1])] {
			vars[string(m[1])] = true
		}
	}
	return vars
}

// checkComposePrometheus checks that the compose Prometheus scrapes the compose services, and
// that promtool accepts its configuration.
func checkComposePrometheus(t *testing.T, c composeFile) {
	t.Helper()
	raw, err := os.ReadFile("compose/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.UnmarshalStrict(raw, &map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &p); err != nil {
		t.Fatal(err)
	}
	scraped := map[string]bool{}
	for _, sc := range p.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				host, _, err := net.SplitHostPort(target)
				if err != nil {
					t.Errorf("job %s: target %s: %v", sc.JobName, target, err)
				}
				scraped[host] = true
			}
		}
	}
	for _, s := range []string{"interlock-1", "interlock-2", "demo"} {
		if !scraped[s] {
			t.Errorf("prometheus does not scrape %s", s)
		}
	}
	for host := range scraped {
		if _, ok := c.Services[host]; !ok {
			t.Errorf("prometheus scrapes %s, not a compose service", host)
		}
	}

	promtool := testdeps.Program(t, "promtool", "prometheus")
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	rules := []byte("groups: []\n")
	if b, err := os.ReadFile("prometheus/interlock-rules.yml"); err == nil {
		rules = b
	}
	for name, data := range map[string][]byte{
		"prometheus.yml":      bytes.ReplaceAll(raw, []byte("/run/secrets/prometheus_token"), []byte(token)),
		"interlock-rules.yml": rules,
		"token":               []byte("x"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(promtool, "check", "config", filepath.Join(dir, "prometheus.yml")).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config compose/prometheus.yml: %v\n%s", err, out)
	}
}

// k8sObject is the part of a Kubernetes object the test reads.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       yaml.MapSlice     `yaml:"spec"`
	raw        []byte
}

// kinds are the API versions of every kind the manifests may hold.
var kinds = map[string]string{
	"Namespace":           "v1",
	"ConfigMap":           "v1",
	"Secret":              "v1",
	"Service":             "v1",
	"Deployment":          "apps/v1",
	"PodDisruptionBudget": "policy/v1",
	"ServiceMonitor":      "monitoring.coreos.com/v1",
	"Kustomization":       "kustomize.config.k8s.io/v1beta1",
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	EnvFrom []struct {
		ConfigMapRef *struct{ Name string } `yaml:"configMapRef"`
		SecretRef    *struct{ Name string } `yaml:"secretRef"`
	} `yaml:"envFrom"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct{ Name, Key string } `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

type deployment struct {
	Spec struct {
		Replicas int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				SecurityContext struct {
					RunAsNonRoot bool `yaml:"runAsNonRoot"`
					RunAsUser    int  `yaml:"runAsUser"`
				} `yaml:"securityContext"`
				Containers []container `yaml:"containers"`
				Volumes    []struct {
					Name   string `yaml:"name"`
					Secret *struct {
						SecretName string `yaml:"secretName"`
						Items      []struct{ Key, Path string }
					} `yaml:"secret"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type selectorSpec struct {
	Spec struct {
		Selector map[string]any `yaml:"selector"`
		Ports    []struct {
			Name       string `yaml:"name"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
		Endpoints []struct {
			Port string `yaml:"port"`
			Path string `yaml:"path"`
		} `yaml:"endpoints"`
		MinAvailable int `yaml:"minAvailable"`
	} `yaml:"spec"`
}

func readManifests(t *testing.T) map[string]k8sObject {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string]k8sObject{}
	for _, f := range files {
		if filepath.Base(f) == "nats-values.yaml" {
			continue // Helm values, not a manifest: TestNATSHelmValues
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		for n := 0; ; n++ {
			var doc map[string]any
			if err := dec.Decode(&doc); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s document %d: %v", f, n, err)
			}
			b, _ := yaml.Marshal(doc)
			var o k8sObject
			if err := yaml.Unmarshal(b, &o); err != nil {
				t.Fatalf("%s document %d: %v", f, n, err)
			}
			o.raw = b
			if v, ok := kinds[o.Kind]; !ok || v != o.APIVersion {
				t.Errorf("%s: %s %s is not a known kind and version", f, o.APIVersion, o.Kind)
			}
			if o.Kind != "Kustomization" && o.Metadata.Name == "" {
				t.Errorf("%s: %s without a name", f, o.Kind)
			}
			objs[o.Kind] = o
		}
	}
	return objs
}

func TestKubernetes(t *testing.T) {
	serve, _ := helps(t)
	objs := readManifests(t)
	for kind := range kinds {
		if _, ok := objs[kind]; !ok {
			t.Errorf("no %s among the manifests", kind)
		}
	}

	// Kustomize lists every manifest but the optional ServiceMonitor.
	var kust struct {
		Resources []string `yaml:"resources"`
	}
	if err := yaml.Unmarshal(objs["Kustomization"].raw, &kust); err != nil {
		t.Fatal(err)
	}
	for _, r := range kust.Resources {
		if _, err := os.Stat(filepath.Join("kubernetes", r)); err != nil {
			t.Errorf("kustomization: %v", err)
		}
	}
	for _, f := range []string{"namespace.yaml", "configmap.yaml", "secret.yaml", "deployment.yaml", "service.yaml", "pdb.yaml"} {
		if !slices.Contains(kust.Resources, f) {
			t.Errorf("kustomization does not list %s", f)
		}
	}

	var d deployment
	if err := yaml.Unmarshal(objs["Deployment"].raw, &d); err != nil {
		t.Fatal(err)
	}
	pod := d.Spec.Template.Spec
	if d.Spec.Replicas < 2 || len(pod.Containers) != 1 {
		t.Fatalf("deployment: %d replicas, %d containers", d.Spec.Replicas, len(pod.Containers))
	}
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("deployment selector %s=%s does not match its pods", k, v)
		}
	}
	c := pod.Containers[0]
	if len(c.Command) != 0 || len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("container runs %v %v, want the image's interlock serve", c.Command, c.Args)
	}
	checkArgs(t, "deployment", c.Args[1:], serve)
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("readiness probe is not GET /readyz")
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Error("liveness probe is not GET /healthz")
	}
	if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
		t.Errorf("resources %+v", c.Resources)
	}
	sc := c.SecurityContext
	if !pod.SecurityContext.RunAsNonRoot || pod.SecurityContext.RunAsUser == 0 || !sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("security context: pod %+v, container %+v", pod.SecurityContext, sc)
	}

	// The environment the container gets: the ConfigMap, and the Secret's keys it names.
	secret := objs["Secret"].StringData
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil && ef.ConfigMapRef.Name == objs["ConfigMap"].Metadata.Name:
			for k, v := range objs["ConfigMap"].Data {
				env[k] = v
			}
		case ef.SecretRef != nil && ef.SecretRef.Name == objs["Secret"].Metadata.Name:
			for k, v := range secret {
				env[k] = v
			}
		default:
			t.Errorf("envFrom %+v names no ConfigMap or Secret of the manifests", ef)
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v, ok := secret[ref.Key]
			if ref.Name != objs["Secret"].Metadata.Name || !ok {
				t.Errorf("env %s: secret %s key %s is not in secret.yaml", e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		default:
			env[e.Name] = e.Value
		}
	}
	for k := range env {
		if !serve.env[k] {
			t.Errorf("environment variable %s is not in interlock serve --help", k)
		}
	}
	cfg := loadServe(t, "deployment", c.Args[1:], env)
	if cfg.Replicas != 3 || cfg.NATSURL == "" || cfg.AdminToken == "" {
		t.Errorf("deployment config: replicas %d, nats url %q, admin token set %v", cfg.Replicas, cfg.NATSURL, cfg.AdminToken != "")
	}
	// The signing key file is the mounted Secret item.
	mounted := false
	for _, vm := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name != vm.Name || v.Secret == nil {
				continue
			}
			for _, it := range v.Secret.Items {
				if _, ok := secret[it.Key]; !ok {
					t.Errorf("volume %s: key %s is not in secret.yaml", v.Name, it.Key)
				}
				if path.Join(vm.MountPath, it.Path) == cfg.SigningKey {
					mounted = true
				}
			}
		}
	}
	if !mounted {
		t.Errorf("signing key %s is not a mounted Secret item", cfg.SigningKey)
	}

	// The Service, the budget and the monitor select the Deployment's pods, by their port.
	podLabels := d.Spec.Template.Metadata.Labels
	var svc, pdb, mon selectorSpec
	for kind, into := range map[string]*selectorSpec{"Service": &svc, "PodDisruptionBudget": &pdb, "ServiceMonitor": &mon} {
		if err := yaml.Unmarshal(objs[kind].raw, into); err != nil {
			t.Fatal(err)
		}
	}
	matches := func(kind string, sel map[string]any, labels map[string]string) {
		if len(sel) == 0 {
			t.Errorf("%s selects nothing", kind)
		}
		for k, v := range sel {
			if fmt.Sprint(v) != labels[k] {
				t.Errorf("%s selector %s=%v does not match", kind, k, v)
			}
		}
	}
	matches("Service", svc.Spec.Selector, podLabels)
	matches("PodDisruptionBudget", asMap(pdb.Spec.Selector["matchLabels"]), podLabels)
	matches("ServiceMonitor", asMap(mon.Spec.Selector["matchLabels"]), objs["Service"].Metadata.Labels)
	if pdb.Spec.MinAvailable < 1 || pdb.Spec.MinAvailable >= d.Spec.Replicas {
		t.Errorf("budget minAvailable %d with %d replicas", pdb.Spec.MinAvailable, d.Spec.Replicas)
	}
	if len(svc.Spec.Ports) != 1 || len(c.Ports) != 1 || svc.Spec.Ports[0].TargetPort != c.Ports[0].Name {
		t.Errorf("service ports %+v do not target the container's %+v", svc.Spec.Ports, c.Ports)
	}
	if len(mon.Spec.Endpoints) != 1 || mon.Spec.Endpoints[0].Port != svc.Spec.Ports[0].Name || mon.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("service monitor endpoints %+v", mon.Spec.Endpoints)
	}
}

func asMap(v any) map[string]any {
	out := map[string]any{}
	if m, ok := v.(map[any]any); ok {
		for k, v := range m {
			out[fmt.Sprint(k)] = v
		}
	}
	return out
}

// The values for the official NATS chart: a JetStream cluster of three, Interlock's account
// with its users, the reader's permissions those of nats-cluster.conf, every password from the
// container's environment.
func TestNATSHelmValues(t *testing.T) {
	raw, err := os.ReadFile("kubernetes/nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Config struct {
			Cluster struct {
				Enabled  bool `yaml:"enabled"`
				Replicas int  `yaml:"replicas"`
			} `yaml:"cluster"`
			JetStream struct {
				Enabled   bool `yaml:"enabled"`
				FileStore struct {
					PVC struct {
						Enabled bool   `yaml:"enabled"`
						Size    string `yaml:"size"`
					} `yaml:"pvc"`
				} `yaml:"fileStore"`
				Merge map[string]string `yaml:"merge"`
			} `yaml:"jetstream"`
			Merge struct {
				Accounts map[string]struct {
					JetStream string `yaml:"jetstream"`
					Users     []struct {
						User        string `yaml:"user"`
						Password    string `yaml:"password"`
						Permissions struct {
							Publish struct {
								Allow []string `yaml:"allow"`
							} `yaml:"publish"`
						} `yaml:"permissions"`
					} `yaml:"users"`
				} `yaml:"accounts"`
				SystemAccount string `yaml:"system_account"`
			} `yaml:"merge"`
		} `yaml:"config"`
		Container struct {
			Env map[string]any `yaml:"env"`
		} `yaml:"container"`
	}
	if err := yaml.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	cl, js := v.Config.Cluster, v.Config.JetStream
	if !cl.Enabled || cl.Replicas != 3 || !js.Enabled || !js.FileStore.PVC.Enabled || js.FileStore.PVC.Size == "" || js.Merge["sync_interval"] != "always" {
		t.Fatalf("cluster %+v, jetstream %+v", cl, js)
	}
	accounts := v.Config.Merge.Accounts
	if _, ok := accounts[v.Config.Merge.SystemAccount]; !ok {
		t.Errorf("system account %q is not among the accounts", v.Config.Merge.SystemAccount)
	}
	il, ok := accounts["INTERLOCK"]
	if !ok || il.JetStream != "enabled" {
		t.Fatalf("INTERLOCK account %+v", il)
	}
	conf, err := os.ReadFile("nats-cluster.conf")
	if err != nil {
		t.Fatal(err)
	}
	passwordVar := regexp.MustCompile(`^<< \$([A-Z0-9_]+) >>$`)
	users := map[string]bool{}
	for name, acc := range accounts {
		for _, u := range acc.Users {
			users[u.User] = true
			m := passwordVar.FindStringSubmatch(u.Password)
			if m == nil {
				t.Errorf("%s/%s: password %q is not read from the environment", name, u.User, u.Password)
				continue
			}
			if _, ok := v.Container.Env[m[1]]; !ok {
				t.Errorf("%s/%s: $%s is not in container.env", name, u.User, m[1])
			}
			for _, subject := range u.Permissions.Publish.Allow {
				if !bytes.Contains(conf, []byte(`"`+subject+`"`)) {
					t.Errorf("%s/%s: %s is not a permission of nats-cluster.conf", name, u.User, subject)
				}
			}
		}
	}
	if !users["interlock"] || !users["reader"] {
		t.Errorf("users %v lack interlock or reader", users)
	}
}
