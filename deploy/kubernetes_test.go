package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	k8syaml "sigs.k8s.io/yaml"
)

// kubeDir holds the Kubernetes examples: Kustomize bases and overlays.
const kubeDir = "deploy/kubernetes"

// The broker's container in every example is named so.
const kubeBrokerContainer = "credbroker"

// kubeAPIAccessPath is where the kubelet mounts a pod's service-account
// token and the cluster CA when automountServiceAccountToken is on.
const kubeAPIAccessPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// kubeObject is one object of a rendered kustomization, decoded strictly
// into its API type.
type kubeObject struct {
	kind, namespace, name string
	obj                   any
}

// kubeTypes maps each kind the examples use to a new value of its API
// type. A kind missing here fails the test: every object is decoded with
// its type, none is passed over.
var kubeTypes = map[string]func() any{
	"Namespace":          func() any { return new(corev1.Namespace) },
	"ServiceAccount":     func() any { return new(corev1.ServiceAccount) },
	"Secret":             func() any { return new(corev1.Secret) },
	"ConfigMap":          func() any { return new(corev1.ConfigMap) },
	"Deployment":         func() any { return new(appsv1.Deployment) },
	"DaemonSet":          func() any { return new(appsv1.DaemonSet) },
	"ClusterRole":        func() any { return new(rbacv1.ClusterRole) },
	"ClusterRoleBinding": func() any { return new(rbacv1.ClusterRoleBinding) },
}

// unmarshalKubeStrict decodes JSON into v as the API server's strict
// decoding does (kubectl apply --validate=strict): field names match their
// tags exactly, case included (encoding/json would take
// readOnlyRootFileSystem for readOnlyRootFilesystem), and unknown or
// repeated fields are errors.
func unmarshalKubeStrict(b []byte, v any) error {
	strict, err := kjson.UnmarshalStrict(b, v)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// decodeKubeStrict decodes one object's JSON into its API type, strictly.
func decodeKubeStrict(b []byte) (kubeObject, error) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return kubeObject{}, err
	}
	newObj, ok := kubeTypes[head.Kind]
	if !ok {
		return kubeObject{}, fmt.Errorf("kind %q (%s) has no API type in kubeTypes: add it, so that it is decoded strictly", head.Kind, head.APIVersion)
	}
	v := newObj()
	if err := unmarshalKubeStrict(b, v); err != nil {
		return kubeObject{}, fmt.Errorf("%s %s: %w", head.Kind, head.Metadata.Name, err)
	}
	return kubeObject{kind: head.Kind, namespace: head.Metadata.Namespace, name: head.Metadata.Name, obj: v}, nil
}

// kubeKustomizations lists the directories under deploy/kubernetes that
// hold a kustomization.yaml, relative to the repository.
func kubeKustomizations(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(filepath.Join(repoRoot, kubeDir), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() == "kustomization.yaml" {
			rel, err := filepath.Rel(repoRoot, filepath.Dir(p))
			if err != nil {
				return err
			}
			dirs = append(dirs, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 {
		t.Fatalf("no kustomization.yaml under %s", kubeDir)
	}
	return dirs
}

// renderKube builds a kustomization as `kubectl apply -k DIR` does (with
// kustomize's own library) and decodes every object strictly.
func renderKube(t *testing.T, dir string) []kubeObject {
	t.Helper()
	abs, err := filepath.Abs(filepath.Join(repoRoot, dir))
	if err != nil {
		t.Fatal(err)
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var objs []kubeObject
	for _, r := range m.Resources() {
		b, err := r.MarshalJSON()
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		o, err := decodeKubeStrict(b)
		if err != nil {
			t.Errorf("%s: %v", dir, err)
			continue
		}
		objs = append(objs, o)
	}
	return objs
}

// kustomizationFile is the part of a kustomization.yaml the examples use;
// decoded strictly, so that a key of another shape is noticed here.
type kustomizationFile struct {
	APIVersion         string   `json:"apiVersion"`
	Kind               string   `json:"kind"`
	Namespace          string   `json:"namespace,omitempty"`
	Resources          []string `json:"resources,omitempty"`
	ConfigMapGenerator []struct {
		Name  string   `json:"name"`
		Files []string `json:"files"`
	} `json:"configMapGenerator,omitempty"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images,omitempty"`
	Labels []struct {
		Pairs map[string]string `json:"pairs"`
	} `json:"labels,omitempty"`
	Patches []struct {
		Target map[string]string `json:"target"`
		Patch  string            `json:"patch"`
	} `json:"patches,omitempty"`
}

// readKustomization decodes dir's kustomization.yaml strictly (duplicate
// keys are errors too).
func readKustomization(t *testing.T, dir string) kustomizationFile {
	t.Helper()
	j, err := k8syaml.YAMLToJSONStrict([]byte(readRepoFile(t, path.Join(dir, "kustomization.yaml"))))
	if err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	var k kustomizationFile
	if err := unmarshalKubeStrict(j, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	return k
}

// TestKubernetesKustomizations checks that every file a kustomization
// names exists, that every YAML file under deploy/kubernetes is used by a
// kustomization (so that none escapes these tests), and that every
// manifest file decodes strictly as it is written, duplicate keys
// included, before kustomize has seen it.
func TestKubernetesKustomizations(t *testing.T) {
	used := map[string]bool{}
	for _, dir := range kubeKustomizations(t) {
		k := readKustomization(t, dir)
		if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
			t.Errorf("%s/kustomization.yaml: apiVersion %q kind %q, want kustomize.config.k8s.io/v1beta1 Kustomization", dir, k.APIVersion, k.Kind)
		}
		used[path.Join(dir, "kustomization.yaml")] = true
		var files []string
		for _, r := range k.Resources {
			p := path.Join(dir, r)
			st, err := os.Stat(filepath.Join(repoRoot, p))
			switch {
			case err != nil:
				t.Errorf("%s/kustomization.yaml: resource %s: %v", dir, r, err)
			case st.IsDir():
				if _, err := os.Stat(filepath.Join(repoRoot, p, "kustomization.yaml")); err != nil {
					t.Errorf("%s/kustomization.yaml: resource %s is a directory without a kustomization.yaml", dir, r)
				}
			default:
				files = append(files, p)
			}
		}
		for _, g := range k.ConfigMapGenerator {
			for _, f := range g.Files {
				p := path.Join(dir, f)
				if _, err := os.Stat(filepath.Join(repoRoot, p)); err != nil {
					t.Errorf("%s/kustomization.yaml: configMapGenerator %s: %v", dir, g.Name, err)
				}
				used[p] = true
			}
		}
		for _, p := range files {
			used[p] = true
			docs := strings.Split(readRepoFile(t, p), "\n---\n")
			for i, doc := range docs {
				j, err := k8syaml.YAMLToJSONStrict([]byte(doc))
				if err != nil {
					t.Errorf("%s, document %d: %v", p, i+1, err)
					continue
				}
				if _, err := decodeKubeStrict(j); err != nil {
					t.Errorf("%s, document %d: %v", p, i+1, err)
				}
			}
		}
	}
	err := filepath.WalkDir(filepath.Join(repoRoot, kubeDir), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") {
			return err
		}
		rel, _ := filepath.Rel(repoRoot, p)
		if !used[filepath.ToSlash(rel)] {
			t.Errorf("%s is in no kustomization: list it, or remove it", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestKubernetesRender builds every base and overlay and checks that each
// object decodes strictly into its Kubernetes API type, and that the
// overlays pin the broker's image.
func TestKubernetesRender(t *testing.T) {
	for _, dir := range kubeKustomizations(t) {
		t.Run(dir, func(t *testing.T) {
			objs := renderKube(t, dir)
			if len(objs) == 0 {
				t.Fatal("renders no object")
			}
			if !strings.Contains(dir, "/overlays/") {
				return
			}
			for _, o := range objs {
				for _, c := range kubeContainers(o) {
					if c.Name == kubeBrokerContainer && !strings.Contains(c.Image, ":") {
						t.Errorf("%s %s: the broker's image %q has no tag: pin it in the overlay's images", o.kind, o.name, c.Image)
					}
				}
			}
		})
	}
}

// kubeContainers returns the init and regular containers of a workload.
func kubeContainers(o kubeObject) []corev1.Container {
	spec := kubePodSpec(o)
	if spec == nil {
		return nil
	}
	return append(slices.Clone(spec.InitContainers), spec.Containers...)
}

// kubePodSpec returns the pod template's spec of a Deployment or
// DaemonSet, else nil.
func kubePodSpec(o kubeObject) *corev1.PodSpec {
	switch v := o.obj.(type) {
	case *appsv1.Deployment:
		return &v.Spec.Template.Spec
	case *appsv1.DaemonSet:
		return &v.Spec.Template.Spec
	}
	return nil
}

// brokerConfig is the part of credbroker's configuration the wiring checks
// read. The whole file is validated by credbroker check.
type brokerConfig struct {
	Socket      string `yaml:"socket"`
	SocketGroup string `yaml:"socket_group"`
	Admin       string `yaml:"admin"`
	Audit       struct {
		Path string `yaml:"path"`
	} `yaml:"audit"`
	Policies  string `yaml:"policies"`
	Attestors struct {
		Kubernetes *struct {
			Audiences       []string `yaml:"audiences"`
			CAFile          string   `yaml:"ca_file"`
			BearerTokenFile string   `yaml:"bearer_token_file"`
			TokenReview     bool     `yaml:"token_review"`
		} `yaml:"kubernetes"`
		Ambient *struct {
			TokenFile string `yaml:"token_file"`
		} `yaml:"ambient"`
	} `yaml:"attestors"`
	Listeners []map[string]struct {
		Listen string `yaml:"listen"`
	} `yaml:"listeners"`
}

// policyFile is the part of a policy file the wiring checks read: the uids
// unix selectors name.
type policyFile struct {
	Policies []struct {
		Name      string           `yaml:"name"`
		Workloads []map[string]any `yaml:"workloads"`
	} `yaml:"policies"`
}

// unixUIDs returns the uids named by unix selectors in the workloads,
// inside all: lists too.
func (p policyFile) unixUIDs() []int64 {
	var uids []int64
	var walk func(map[string]any)
	walk = func(w map[string]any) {
		for k, v := range w {
			switch k {
			case "unix":
				if m, ok := v.(map[string]any); ok {
					if uid, ok := m["uid"].(int); ok {
						uids = append(uids, int64(uid))
					}
				}
			case "all":
				if l, ok := v.([]any); ok {
					for _, e := range l {
						if m, ok := e.(map[string]any); ok {
							walk(m)
						}
					}
				}
			}
		}
	}
	for _, pol := range p.Policies {
		for _, w := range pol.Workloads {
			walk(w)
		}
	}
	return uids
}

// kubeBroker is the broker of one rendered example: its workload, its
// container, and its configuration as the pod would see it.
type kubeBroker struct {
	workload   kubeObject
	spec       *corev1.PodSpec
	container  corev1.Container
	native     bool   // an init container with restartPolicy Always
	root       string // a directory holding the broker's ConfigMap and Secret mounts
	configPath string // the --config path, as mounted in the pod
	config     brokerConfig
	policies   policyFile
}

// findKubeBroker finds the broker's container in the rendered objects,
// lays out its ConfigMap and Secret volumes under a temporary directory at
// their mount paths, as the kubelet would, and reads its configuration
// from there.
func findKubeBroker(t *testing.T, objs []kubeObject) *kubeBroker {
	t.Helper()
	var b *kubeBroker
	for _, o := range objs {
		spec := kubePodSpec(o)
		if spec == nil {
			continue
		}
		for i, c := range spec.InitContainers {
			if c.Name == kubeBrokerContainer {
				b = &kubeBroker{workload: o, spec: spec, container: spec.InitContainers[i],
					native: c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways}
			}
		}
		for i, c := range spec.Containers {
			if c.Name == kubeBrokerContainer {
				b = &kubeBroker{workload: o, spec: spec, container: spec.Containers[i]}
			}
		}
	}
	if b == nil {
		t.Fatalf("no container named %s", kubeBrokerContainer)
	}
	args := append(slices.Clone(b.container.Command), b.container.Args...)
	for i, a := range args {
		if a == "--config" && i+1 < len(args) {
			b.configPath = args[i+1]
		}
	}
	if b.configPath == "" {
		t.Fatalf("container %s: no --config in its args %q", b.container.Name, args)
	}
	b.root = t.TempDir()
	for _, m := range b.container.VolumeMounts {
		v := kubeVolume(b.spec, m.Name)
		if v == nil {
			t.Errorf("container %s mounts volume %s, which the pod does not have", b.container.Name, m.Name)
			continue
		}
		var data map[string]string
		switch {
		case v.ConfigMap != nil:
			cm := kubeFind[*corev1.ConfigMap](t, objs, "ConfigMap", b.workload.namespace, v.ConfigMap.Name)
			data = cm.Data
		case v.Secret != nil:
			s := kubeFind[*corev1.Secret](t, objs, "Secret", b.workload.namespace, v.Secret.SecretName)
			data = map[string]string{}
			for k, v := range s.StringData {
				data[k] = v
			}
			for k, v := range s.Data {
				data[k] = string(v)
			}
		default:
			continue
		}
		if !m.ReadOnly {
			t.Errorf("container %s: volume %s (configuration or secrets) is mounted writable at %s; mount it readOnly", b.container.Name, m.Name, m.MountPath)
		}
		dir := filepath.Join(b.root, m.MountPath)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for k, v := range data {
			if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	raw, err := os.ReadFile(filepath.Join(b.root, b.configPath))
	if err != nil {
		t.Fatalf("--config %s is in none of the broker's ConfigMap volumes: %v", b.configPath, err)
	}
	if err := yaml.Unmarshal(raw, &b.config); err != nil {
		t.Fatalf("%s: %v", b.configPath, err)
	}
	if b.config.Policies != "" {
		p := b.config.Policies
		if !path.IsAbs(p) {
			p = path.Join(path.Dir(b.configPath), p)
		}
		raw, err := os.ReadFile(filepath.Join(b.root, p))
		if err != nil {
			t.Fatalf("policies %s: %v", p, err)
		}
		if err := yaml.Unmarshal(raw, &b.policies); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	return b
}

// kubeFind returns the object of a kind and name, failing the test when the
// rendered objects lack it.
func kubeFind[T any](t *testing.T, objs []kubeObject, kind, namespace, name string) T {
	t.Helper()
	for _, o := range objs {
		if o.kind == kind && o.name == name && (namespace == "" || o.namespace == namespace) {
			return o.obj.(T)
		}
	}
	t.Fatalf("no %s %s in namespace %q among the rendered objects", kind, name, namespace)
	var zero T
	return zero
}

// kubeVolume returns the pod's volume of a name, or nil.
func kubeVolume(spec *corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

// kubeMountOf returns the container's mount under which p lies (the
// deepest), or nil.
func kubeMountOf(c corev1.Container, p string) *corev1.VolumeMount {
	var best *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		mp := strings.TrimSuffix(m.MountPath, "/")
		if (p == mp || strings.HasPrefix(p, mp+"/")) && (best == nil || len(mp) > len(best.MountPath)) {
			best = &c.VolumeMounts[i]
		}
	}
	return best
}

// checkConfig runs credbroker check on the broker's configuration laid out
// as the pod mounts it, as the user the container runs as.
func (b *kubeBroker) checkConfig(t *testing.T, bin string) {
	t.Helper()
	sc := b.container.SecurityContext
	if sc == nil || sc.RunAsUser == nil || sc.RunAsGroup == nil {
		t.Fatalf("container %s: set runAsUser and runAsGroup, which credbroker check needs to compile uid: self", b.container.Name)
	}
	cmd := exec.Command(bin, "check", "--config", filepath.Join(b.root, b.configPath),
		"--broker-uid", strconv.FormatInt(*sc.RunAsUser, 10), "--broker-gid", strconv.FormatInt(*sc.RunAsGroup, 10))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("credbroker check of %s (the ConfigMap and Secret as mounted): %v\n%s", b.configPath, err, out)
	}
}

// checkWritable fails unless p's directory is on a volume the broker's
// container mounts writable: its root filesystem is read-only.
func (b *kubeBroker) checkWritable(t *testing.T, what, p string) *corev1.VolumeMount {
	t.Helper()
	m := kubeMountOf(b.container, path.Dir(p))
	switch {
	case m == nil:
		t.Errorf("%s %s is on the container's read-only root filesystem: mount a volume at %s", what, p, path.Dir(p))
	case m.ReadOnly:
		t.Errorf("%s %s is on volume %s, mounted readOnly", what, p, m.Name)
	}
	return m
}

// checkProbes checks that the probes ask the admin endpoints on the admin
// port of the configuration, which must listen where the kubelet reaches
// it (the pod's IP, not its loopback).
func (b *kubeBroker) checkProbes(t *testing.T) {
	t.Helper()
	host, port, err := net.SplitHostPort(b.config.Admin)
	if err != nil {
		t.Fatalf("admin %q: %v (the probes need the admin endpoints)", b.config.Admin, err)
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		t.Errorf("admin %q listens on loopback, which the kubelet's probes (to the pod's IP) cannot reach", b.config.Admin)
	}
	want, _ := strconv.Atoi(port)
	probe := func(name string, p *corev1.Probe, wantPath string) {
		if p == nil {
			t.Errorf("container %s has no %s probe", b.container.Name, name)
			return
		}
		if p.HTTPGet == nil {
			t.Errorf("%s probe: want httpGet %s on the admin port", name, wantPath)
			return
		}
		if p.HTTPGet.Path != wantPath {
			t.Errorf("%s probe: path %s, want %s", name, p.HTTPGet.Path, wantPath)
		}
		got := p.HTTPGet.Port.IntValue()
		if p.HTTPGet.Port.StrVal != "" {
			got = 0
			for _, cp := range b.container.Ports {
				if cp.Name == p.HTTPGet.Port.StrVal {
					got = int(cp.ContainerPort)
				}
			}
		}
		if got != want {
			t.Errorf("%s probe: port %s is %d, the admin endpoints are on %d (admin: %s)", name, p.HTTPGet.Port.String(), got, want, b.config.Admin)
		}
	}
	probe("liveness", b.container.LivenessProbe, "/healthz")
	probe("readiness", b.container.ReadinessProbe, "/readyz")
	if b.native {
		// The app starts after a native sidecar's startup probe passes.
		probe("startup", b.container.StartupProbe, "/readyz")
	}
}

// checkBrokerSecurity checks the broker container's securityContext: a
// read-only root filesystem, no privilege escalation, the runtime's seccomp
// profile, and of all capabilities only the two attestation needs — for
// root, since Kubernetes gives a non-root container no effective
// capability.
func (b *kubeBroker) checkBrokerSecurity(t *testing.T) {
	t.Helper()
	sc := b.container.SecurityContext
	if sc == nil {
		t.Fatalf("container %s has no securityContext", b.container.Name)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem: want true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation: want false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged: want false")
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil && b.spec.SecurityContext != nil {
		seccomp = b.spec.SecurityContext.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("seccompProfile: want RuntimeDefault")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Error("capabilities.drop: want [ALL]")
	}
	var add []string
	if sc.Capabilities != nil {
		for _, c := range sc.Capabilities.Add {
			add = append(add, string(c))
		}
	}
	slices.Sort(add)
	if want := []string{"DAC_READ_SEARCH", "SYS_PTRACE"}; !slices.Equal(add, want) {
		t.Errorf("capabilities.add %v: want exactly %v, what the unix attestor needs to read other users' /proc/PID/exe and /proc/PID/fd", add, want)
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Error("runAsUser: want 0; a non-root container gets no effective capability in Kubernetes")
	}
	if b.spec.HostNetwork || b.spec.HostIPC {
		t.Error("hostNetwork and hostIPC: the broker needs neither")
	}
	for _, c := range kubeContainers(b.workload) {
		r := c.Resources
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := r.Requests[res]; !ok {
				t.Errorf("container %s: no %s request", c.Name, res)
			}
			if _, ok := r.Limits[res]; !ok {
				t.Errorf("container %s: no %s limit", c.Name, res)
			}
		}
	}
}

// checkGroup checks that the broker is a member of the socket's group
// (so that it may give the socket that group without CAP_CHOWN).
func (b *kubeBroker) checkGroup(t *testing.T) int64 {
	t.Helper()
	gid, err := strconv.ParseInt(b.config.SocketGroup, 10, 64)
	if err != nil {
		t.Fatalf("socket_group %q: want a numeric gid (the image has no /etc/group): %v", b.config.SocketGroup, err)
	}
	if b.spec.SecurityContext == nil || !slices.Contains(b.spec.SecurityContext.SupplementalGroups, gid) {
		t.Errorf("socket_group %d: the pod's supplementalGroups must hold it, or the broker (without CAP_CHOWN) cannot give the socket that group", gid)
	}
	return gid
}

// checkCaller checks an app container that calls the broker: it runs as
// a non-root user the policies name, in the socket's group, with no
// capability, and reaches the socket through volume vol (of its pod spec)
// mounted read-only at the broker's path, which CREDBROKER_SOCKET names.
func checkCaller(t *testing.T, b *kubeBroker, spec *corev1.PodSpec, c corev1.Container, socketVol func(*corev1.Volume) bool, gid int64) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil || sc.RunAsUser == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("container %s: set runAsUser and runAsNonRoot: true", c.Name)
	} else {
		if !slices.Contains(b.policies.unixUIDs(), *sc.RunAsUser) {
			t.Errorf("container %s runs as uid %d, which no unix selector of the policies names (%v)", c.Name, *sc.RunAsUser, b.policies.unixUIDs())
		}
		if bsc := b.container.SecurityContext; bsc != nil && bsc.RunAsUser != nil && *bsc.RunAsUser == *sc.RunAsUser {
			t.Errorf("container %s runs as the broker's uid %d: it could read the broker's files through /proc", c.Name, *sc.RunAsUser)
		}
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || len(sc.Capabilities.Add) > 0 || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container %s: want allowPrivilegeEscalation: false and capabilities {drop: [ALL]}", c.Name)
	}
	inGroup := (sc != nil && sc.RunAsGroup != nil && *sc.RunAsGroup == gid) ||
		(spec.SecurityContext != nil && slices.Contains(spec.SecurityContext.SupplementalGroups, gid))
	if !inGroup {
		t.Errorf("container %s is not in the socket's group %d (socket_mode 0660): it could not connect", c.Name, gid)
	}
	m := kubeMountOf(c, b.config.Socket)
	switch {
	case m == nil:
		t.Errorf("container %s does not mount the socket's directory %s", c.Name, path.Dir(b.config.Socket))
		return
	case !m.ReadOnly:
		t.Errorf("container %s mounts the socket's volume %s writable: mount it readOnly, so that it cannot replace the socket", c.Name, m.Name)
	}
	if v := kubeVolume(spec, m.Name); v == nil || !socketVol(v) {
		t.Errorf("container %s: %s is on volume %s, not the broker's socket volume", c.Name, b.config.Socket, m.Name)
	}
	bm := kubeMountOf(b.container, b.config.Socket)
	if bm != nil && bm.MountPath != m.MountPath {
		t.Errorf("container %s mounts the socket's volume at %s, the broker at %s: the socket's path differs", c.Name, m.MountPath, bm.MountPath)
	}
	var env string
	for _, e := range c.Env {
		if e.Name == "CREDBROKER_SOCKET" {
			env = e.Value
		}
	}
	if env != b.config.Socket {
		t.Errorf("container %s: CREDBROKER_SOCKET=%q, want the configuration's socket %q", c.Name, env, b.config.Socket)
	}
}

// checkTokenVolume checks a projected service-account token volume: one
// of the broker's audiences, a short life, at the path that is read.
func checkTokenVolume(t *testing.T, b *kubeBroker, what string, v *corev1.Volume, file string) {
	t.Helper()
	if v == nil || v.Projected == nil {
		t.Errorf("%s: %s is not on a projected token volume", what, file)
		return
	}
	var found bool
	for _, s := range v.Projected.Sources {
		tok := s.ServiceAccountToken
		if tok == nil || tok.Path != path.Base(file) {
			continue
		}
		found = true
		if b.config.Attestors.Kubernetes == nil || !slices.Contains(b.config.Attestors.Kubernetes.Audiences, tok.Audience) {
			t.Errorf("%s: volume %s has audience %q; attestors.kubernetes.audiences is %v", what, v.Name, tok.Audience, b.config.Attestors.Kubernetes.Audiences)
		}
		if tok.ExpirationSeconds == nil || *tok.ExpirationSeconds > 3600 {
			t.Errorf("%s: volume %s: set expirationSeconds, at most an hour (600, the least Kubernetes allows, is best)", what, v.Name)
		}
	}
	if !found {
		t.Errorf("%s: volume %s has no serviceAccountToken at path %s", what, v.Name, path.Base(file))
	}
}

// checkAPIAccess checks that the files the kubernetes attestor reads to
// fetch the signing keys (ca_file, bearer_token_file) are the pod's own
// API token and CA, mounted in the broker's container.
func (b *kubeBroker) checkAPIAccess(t *testing.T) {
	t.Helper()
	k := b.config.Attestors.Kubernetes
	for _, f := range []string{k.CAFile, k.BearerTokenFile} {
		if f == "" {
			continue
		}
		if path.Dir(f) != kubeAPIAccessPath {
			t.Errorf("%s: want the pod's own, under %s", f, kubeAPIAccessPath)
			continue
		}
		if m := kubeMountOf(b.container, f); m != nil {
			v := kubeVolume(b.spec, m.Name)
			if v == nil || v.Projected == nil {
				t.Errorf("%s is on volume %s, not a projected service-account volume", f, m.Name)
			}
			continue
		}
		if b.spec.AutomountServiceAccountToken == nil || !*b.spec.AutomountServiceAccountToken {
			t.Errorf("%s: nothing mounts it (automountServiceAccountToken is off and no volume is mounted at %s)", f, kubeAPIAccessPath)
		}
	}
}

// TestKubernetesSidecar checks the wiring of the sidecar example, as each
// of its overlays renders it: the socket volume in both containers, the
// projected token's audience, the probes on the admin port, the
// securityContexts, and the configuration passing credbroker check.
func TestKubernetesSidecar(t *testing.T) {
	bin := credbrokerBinary(t)
	for _, dir := range []string{kubeDir + "/overlays/sidecar", kubeDir + "/overlays/classic-sidecar"} {
		t.Run(path.Base(dir), func(t *testing.T) {
			objs := renderKube(t, dir)
			b := findKubeBroker(t, objs)
			if _, ok := b.workload.obj.(*appsv1.Deployment); !ok {
				t.Fatalf("the broker is in a %s, want a Deployment", b.workload.kind)
			}
			if want := path.Base(dir) == "sidecar"; b.native != want {
				t.Errorf("native sidecar (an init container with restartPolicy: Always): %v, want %v", b.native, want)
			}
			b.checkConfig(t, bin)
			b.checkProbes(t)
			b.checkBrokerSecurity(t)
			gid := b.checkGroup(t)
			if b.spec.ShareProcessNamespace == nil || !*b.spec.ShareProcessNamespace {
				t.Error("shareProcessNamespace: want true; the broker cannot attest processes it cannot see")
			}
			if b.spec.AutomountServiceAccountToken == nil || *b.spec.AutomountServiceAccountToken {
				t.Error("automountServiceAccountToken: want false at the pod; only the broker needs an API token")
			}

			sm := b.checkWritable(t, "socket", b.config.Socket)
			if sm != nil {
				if v := kubeVolume(b.spec, sm.Name); v == nil || v.EmptyDir == nil {
					t.Errorf("the socket is on volume %s: want an emptyDir, private to the pod", sm.Name)
				} else if sm.MountPath == path.Dir(b.config.Socket) {
					t.Errorf("the socket is straight in the emptyDir %s, which every user may write without the sticky bit: the broker refuses it; use a subdirectory", sm.MountPath)
				}
			}
			b.checkWritable(t, "audit.path", b.config.Audit.Path)

			if b.config.Attestors.Kubernetes == nil {
				t.Fatal("no attestors.kubernetes in the configuration")
			}
			if b.config.Attestors.Ambient == nil {
				t.Fatal("no attestors.ambient: the sidecar attests callers that present nothing with the pod's token")
			}
			tf := b.config.Attestors.Ambient.TokenFile
			if m := kubeMountOf(b.container, tf); m == nil {
				t.Errorf("attestors.ambient.token_file %s is mounted from no volume", tf)
			} else {
				checkTokenVolume(t, b, "attestors.ambient.token_file", kubeVolume(b.spec, m.Name), tf)
			}
			b.checkAPIAccess(t)

			callers := 0
			for _, c := range kubeContainers(b.workload) {
				if c.Name == kubeBrokerContainer {
					continue
				}
				callers++
				checkCaller(t, b, b.spec, c, func(v *corev1.Volume) bool { return v.Name == sm.Name }, gid)
				for _, m := range c.VolumeMounts {
					if v := kubeVolume(b.spec, m.Name); v != nil && (v.Secret != nil || v.Projected != nil) {
						t.Errorf("container %s mounts %s: the app needs no secret or token of the broker's", c.Name, m.Name)
					}
				}
			}
			if callers == 0 {
				t.Error("no app container beside the broker")
			}
		})
	}
}

// TestKubernetesNodeAgent checks the wiring of the node-agent example: a
// DaemonSet in the host's PID namespace serving a host directory's socket,
// the pods that call it mounting that directory and presenting a token of
// the broker's audience, the RBAC of the token review, the probes, the
// securityContext, and the configuration passing credbroker check.
func TestKubernetesNodeAgent(t *testing.T) {
	bin := credbrokerBinary(t)
	objs := renderKube(t, kubeDir+"/overlays/node-agent")
	b := findKubeBroker(t, objs)
	ds, ok := b.workload.obj.(*appsv1.DaemonSet)
	if !ok {
		t.Fatalf("the broker is in a %s, want a DaemonSet", b.workload.kind)
	}
	b.checkConfig(t, bin)
	b.checkProbes(t)
	b.checkBrokerSecurity(t)
	gid := b.checkGroup(t)
	if !b.spec.HostPID {
		t.Error("hostPID: want true; the broker attests processes of every pod on the node")
	}
	if len(b.spec.Tolerations) == 0 {
		t.Error("no tolerations: the broker would be missing from tainted nodes")
	}

	sm := b.checkWritable(t, "socket", b.config.Socket)
	var hostDir string
	if sm != nil {
		if v := kubeVolume(b.spec, sm.Name); v == nil || v.HostPath == nil {
			t.Fatalf("the socket is on volume %s: want a hostPath, which the node's pods mount", sm.Name)
		} else {
			hostDir = v.HostPath.Path
		}
	}
	if m := b.checkWritable(t, "audit.path", b.config.Audit.Path); m != nil {
		if v := kubeVolume(b.spec, m.Name); v == nil || v.HostPath == nil {
			t.Errorf("audit.path is on volume %s: want a hostPath, so that the log outlives the pod", m.Name)
		}
	}
	k := b.config.Attestors.Kubernetes
	if k == nil {
		t.Fatal("no attestors.kubernetes in the configuration")
	}
	if b.config.Attestors.Ambient != nil {
		t.Error("attestors.ambient: a node agent serves many pods and must not lend one identity to callers that present none")
	}
	b.checkAPIAccess(t)

	// RBAC: the token review, and nothing else, for the DaemonSet's account.
	sa := ds.Spec.Template.Spec.ServiceAccountName
	kubeFind[*corev1.ServiceAccount](t, objs, "ServiceAccount", b.workload.namespace, sa)
	var rules []rbacv1.PolicyRule
	for _, o := range objs {
		crb, ok := o.obj.(*rbacv1.ClusterRoleBinding)
		if !ok {
			continue
		}
		for _, s := range crb.Subjects {
			if s.Kind == "ServiceAccount" && s.Name == sa && s.Namespace == b.workload.namespace {
				rules = append(rules, kubeFind[*rbacv1.ClusterRole](t, objs, "ClusterRole", "", crb.RoleRef.Name).Rules...)
			}
		}
	}
	want := []rbacv1.PolicyRule{}
	if k.TokenReview {
		want = append(want, rbacv1.PolicyRule{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}})
	}
	if fmt.Sprint(rules) != fmt.Sprint(want) {
		t.Errorf("service account %s/%s may %v; want exactly %v (token_review: %v)", b.workload.namespace, sa, rules, want, k.TokenReview)
	}

	// The pods that call it.
	callers := 0
	for _, o := range objs {
		spec := kubePodSpec(o)
		if spec == nil || o.name == b.workload.name && o.kind == b.workload.kind {
			continue
		}
		for _, c := range kubeContainers(o) {
			callers++
			checkCaller(t, b, spec, c, func(v *corev1.Volume) bool {
				return v.HostPath != nil && v.HostPath.Path == hostDir
			}, gid)
			var tokenMounted bool
			for _, m := range c.VolumeMounts {
				v := kubeVolume(spec, m.Name)
				if v == nil || v.Projected == nil {
					continue
				}
				for _, s := range v.Projected.Sources {
					if s.ServiceAccountToken != nil {
						tokenMounted = true
						checkTokenVolume(t, b, o.name+"/"+c.Name, v, path.Join(m.MountPath, s.ServiceAccountToken.Path))
					}
				}
			}
			if !tokenMounted {
				t.Errorf("%s/%s mounts no projected token of the broker's audience: it could not present one", o.name, c.Name)
			}
		}
	}
	if callers == 0 {
		t.Error("the overlay has no pod that calls the node agent")
	}
}
