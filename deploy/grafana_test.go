package deploy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dashboardFile is the Grafana dashboard of the broker's metrics.
const dashboardFile = "deploy/grafana/credbroker.json"

// TestGrafanaDashboard checks that deploy/grafana/credbroker.json is a
// dashboard Grafana can import (panels laid out on its 24-column grid
// without overlapping, each querying the dashboard's Prometheus data source
// variable, every variable a query uses defined), that every metric its
// queries name is one a real broker exports on /metrics, and that every
// credbroker metric the broker exports has a panel.
func TestGrafanaDashboard(t *testing.T) {
	var dash dashboard
	raw := readRepoFile(t, dashboardFile)
	if err := json.Unmarshal([]byte(raw), &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	for _, p := range dashboardProblems(dash) {
		t.Errorf("%s: %s", dashboardFile, p)
	}

	exported, families := brokerMetrics(t)
	used := map[string]bool{}
	for _, q := range dash.queries() {
		for _, name := range promMetricNames(q.expr) {
			if !exported[name] && !used[name] {
				t.Errorf("%s: panel %q queries %s, which the broker does not export (its metrics: %s)", dashboardFile, q.panel, name, strings.Join(grafanaKeys(exported, "credbroker_"), ", "))
			}
			used[name] = true
		}
	}
	for _, f := range families {
		if !strings.HasPrefix(f, "credbroker_") {
			continue
		}
		if !used[f] && !used[f+"_bucket"] && !used[f+"_count"] && !used[f+"_sum"] {
			t.Errorf("%s: no panel shows %s, which the broker exports: add one", dashboardFile, f)
		}
	}
}

// dashboard is what the test reads of a Grafana dashboard.
type dashboard struct {
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	GridPos    gridPos     `json:"gridPos"`
	Datasource *datasource `json:"datasource"`
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

type gridPos struct {
	H, W, X, Y int
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// query is one PromQL expression of the dashboard and where it is.
type query struct{ panel, expr string }

// queries lists every panel's target expressions and the templating
// queries (label_values(METRIC, LABEL) as the metric's name).
func (d dashboard) queries() []query {
	var out []query
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out = append(out, query{p.Title, tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if json.Unmarshal(v.Query, &q) != nil {
			_ = json.Unmarshal(v.Query, &q.Query) // the older form: a string
		}
		if m := labelValues.FindStringSubmatch(q.Query); m != nil {
			out = append(out, query{"variable " + v.Name, m[1]})
		} else {
			out = append(out, query{"variable " + v.Name, q.Query})
		}
	}
	return out
}

var (
	labelValues  = regexp.MustCompile(`^\s*label_values\(\s*(.+?)\s*,\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)
	dashboardUID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,40}$`)
	variableUse  = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)`)
)

// panelTypes are Grafana's core panel types.
var panelTypes = []string{"row", "timeseries", "stat", "gauge", "bargauge", "table", "text", "heatmap", "piechart", "logs"}

// dashboardProblems reports what would keep Grafana from importing d or
// showing its panels.
func dashboardProblems(d dashboard) []string {
	var probs []string
	bad := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	if d.Title == "" {
		bad("no title")
	}
	if !dashboardUID.MatchString(d.UID) {
		bad("uid %q: 1 to 40 of A-Z a-z 0-9 _ -", d.UID)
	}
	if d.SchemaVersion < 36 {
		bad("schemaVersion %d: write the dashboard for Grafana 9.1 or later (36+)", d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" {
		bad("templating has no data source variable named datasource")
	}
	if len(d.Panels) == 0 {
		bad("no panels")
	}
	ids := map[int]bool{}
	var placed []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				bad("panel %q: id %d used twice", p.Title, p.ID)
			}
			ids[p.ID] = true
			if !slices.Contains(panelTypes, p.Type) {
				bad("panel %q: type %q is not a core panel type", p.Title, p.Type)
			}
			if p.Title == "" {
				bad("panel %d has no title", p.ID)
			}
			g := p.GridPos
			if g.W < 1 || g.H < 1 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
				bad("panel %q: gridPos %+v is off Grafana's 24-column grid", p.Title, g)
			}
			for _, q := range placed {
				o := q.GridPos
				if g.X < o.X+o.W && o.X < g.X+g.W && g.Y < o.Y+o.H && o.Y < g.Y+g.H {
					bad("panel %q overlaps panel %q", p.Title, q.Title)
				}
			}
			placed = append(placed, p)
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
				bad("panel %q: datasource must be {type: prometheus, uid: ${datasource}}", p.Title)
			}
			if len(p.Targets) == 0 {
				bad("panel %q has no query", p.Title)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					bad("panel %q: target %s has no expression", p.Title, tg.RefID)
				}
				if tg.RefID == "" || refs[tg.RefID] {
					bad("panel %q: target refId %q empty or used twice", p.Title, tg.RefID)
				}
				refs[tg.RefID] = true
				if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
					bad("panel %q: target %s queries another data source", p.Title, tg.RefID)
				}
				for _, m := range variableUse.FindAllStringSubmatch(tg.Expr, -1) {
					if _, ok := vars[m[1]]; !ok && !strings.HasPrefix(m[1], "__") {
						bad("panel %q: $%s is not a variable of the dashboard", p.Title, m[1])
					}
				}
			}
		}
	}
	walk(d.Panels)
	return probs
}

// promMetricNames returns the metric names a PromQL expression selects:
// its identifiers once string literals, label matchers, ranges, grouping
// clauses, numbers and function calls are set aside.
func promMetricNames(expr string) []string {
	for _, re := range promNoise {
		expr = re.ReplaceAllString(expr, " ")
	}
	expr = promNumber.ReplaceAllString(expr, "$1 ")
	var names []string
	for _, m := range promIdent.FindAllStringSubmatchIndex(expr, -1) {
		name := expr[m[2]:m[3]]
		rest := strings.TrimLeft(expr[m[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") || promKeywords[strings.ToLower(name)] {
			continue // a function or an operator
		}
		if m[2] > 0 && expr[m[2]-1] == '$' {
			continue // a Grafana variable
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names
}

var (
	promNoise = []*regexp.Regexp{
		regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`),                                 // strings
		regexp.MustCompile(`\{[^}]*\}`),                                                           // label matchers
		regexp.MustCompile(`\[[^\]]*\]`),                                                          // ranges, subqueries
		regexp.MustCompile(`(?i)\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`), // grouping
		regexp.MustCompile(`(?i)\boffset\s+-?[0-9a-z$_]+`),                                        // offsets
	}
	promNumber   = regexp.MustCompile(`(?i)(^|[^A-Za-z0-9_:$])(?:0x[0-9a-f]+|[0-9]+(?:\.[0-9]*)?(?:e[+-]?[0-9]+)?)`)
	promIdent    = regexp.MustCompile(`(?:^|[^A-Za-z0-9_:])([A-Za-z_:][A-Za-z0-9_:]*)`)
	promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "inf": true, "nan": true, "by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true, "offset": true}
)

func TestPromMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum by (result) (rate(credbroker_decisions_total{instance=~"$instance"}[$__rate_interval]))`: {"credbroker_decisions_total"},
		`histogram_quantile(0.99, sum by (le) (rate(x_bucket{a="b{c}"}[5m])))`:                        {"x_bucket"},
		`sum(rate(a_sum[1m])) / sum(rate(a_count[1m])) > 0.5 and on (instance) up offset 5m`:          {"a_sum", "a_count", "up"},
		`time() - max by (instance) (last_success_seconds > 0)`:                                       {"last_success_seconds"},
		`sum(increase(x{result="deny"}[$__range])) / clamp_min(sum(increase(x[$__range])), 1e3)`:      {"x"},
		`process_resident_memory_bytes{instance=~"$instance"}`:                                        {"process_resident_memory_bytes"},
		`sum without (job) (rate(ns:requests:rate5m[5m])) or vector(0)`:                               {"ns:requests:rate5m"},
	} {
		if got := promMetricNames(expr); !slices.Equal(got, want) {
			t.Errorf("promMetricNames(%q) = %q, want %q", expr, got, want)
		}
	}
}

// TestDashboardProblems checks that the dashboard check catches what it
// is there to catch.
func TestDashboardProblems(t *testing.T) {
	ds := &datasource{Type: "prometheus", UID: "${datasource}"}
	good := func() dashboard {
		var d dashboard
		d.Title, d.UID, d.SchemaVersion = "t", "u", 39
		d.Templating.List = append(d.Templating.List, struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		}{Name: "datasource", Type: "datasource"})
		p := panel{ID: 1, Type: "timeseries", Title: "a", GridPos: gridPos{H: 8, W: 12}, Datasource: ds}
		p.Targets = append(p.Targets, struct {
			RefID      string      `json:"refId"`
			Expr       string      `json:"expr"`
			Datasource *datasource `json:"datasource"`
		}{RefID: "A", Expr: "up"})
		d.Panels = []panel{p}
		return d
	}
	if probs := dashboardProblems(good()); len(probs) != 0 {
		t.Fatalf("a good dashboard: %q", probs)
	}
	for name, c := range map[string]struct {
		edit func(*dashboard)
		want string
	}{
		"overlap": {func(d *dashboard) {
			q := d.Panels[0]
			q.ID, q.Title, q.GridPos.X = 2, "b", 6
			d.Panels = append(d.Panels, q)
		}, `panel "b" overlaps panel "a"`},
		"off grid":    {func(d *dashboard) { d.Panels[0].GridPos.X = 20 }, "off Grafana's 24-column grid"},
		"same id":     {func(d *dashboard) { q := d.Panels[0]; q.GridPos.Y = 8; d.Panels = append(d.Panels, q) }, "id 1 used twice"},
		"datasource":  {func(d *dashboard) { d.Panels[0].Datasource = &datasource{Type: "prometheus", UID: "abc"} }, "datasource must be"},
		"variable":    {func(d *dashboard) { d.Panels[0].Targets[0].Expr = `up{job="$job"}` }, "$job is not a variable"},
		"type":        {func(d *dashboard) { d.Panels[0].Type = "graphh" }, `type "graphh"`},
		"schema":      {func(d *dashboard) { d.SchemaVersion = 16 }, "schemaVersion 16"},
		"no query":    {func(d *dashboard) { d.Panels[0].Targets = nil }, "has no query"},
		"no variable": {func(d *dashboard) { d.Templating.List = nil }, "no data source variable"},
	} {
		d := good()
		c.edit(&d)
		probs := strings.Join(dashboardProblems(d), "\n")
		if !strings.Contains(probs, c.want) {
			t.Errorf("%s: problems %q, want one containing %q", name, probs, c.want)
		}
	}
}

// brokerMetrics runs the real broker on the quickstart configuration, with
// a minted credential (an oauth2 one, whose token endpoint the test
// serves) so that the lease manager's metrics are exported, and audit
// forwarding to a fleet store (unreachable: forwarding never holds up a
// decision) so that the forwarder's are; makes one request; and returns
// the sample names of its /metrics and its metric families.
func brokerMetrics(t *testing.T) (samples map[string]bool, families []string) {
	t.Helper()
	bin := credbrokerBinary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config")
	grafanaCopyDir(t, filepath.Join(repoRoot, "examples/quickstart"), cfg)

	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"grafana-test-token","token_type":"Bearer","expires_in":3600}`)
	}))
	t.Cleanup(tokens.Close)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	storeAddr := closed.Addr().(*net.TCPAddr)
	closed.Close() // nothing listens there: the fleet store is down
	grafanaWriteFile(t, filepath.Join(cfg, "oauth.secret"), "grafana-test-client-secret\n")
	grafanaWriteFile(t, filepath.Join(cfg, "fleet.dsn"), fmt.Sprintf("host=127.0.0.1 port=%d dbname=fleet user=forwarder\n", storeAddr.Port))
	grafanaWriteFile(t, filepath.Join(cfg, "minted.yaml"), fmt.Sprintf(
		"credentials:\n  - {name: partner-api, ttl: 15m, oauth2: {token_url: %q, client_id: broker, client_secret_file: oauth.secret}}\n", tokens.URL+"/token"))
	grafanaWriteFile(t, filepath.Join(cfg, "forward.yaml"), "audit:\n  forward: {postgres: {dsn_file: fleet.dsn}}\n")

	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(state, "broker.sock")
	cmd := exec.Command(bin, "run", "--config", cfg, "--socket", sock, "--audit-db", filepath.Join(state, "audit.db"), "--admin", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	admin := make(chan string, 1)
	var logLines strings.Builder
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logLines.WriteString(sc.Text() + "\n")
			if m := adminListening.FindStringSubmatch(sc.Text()); m != nil {
				admin <- m[1]
			}
		}
	}()
	go func() { <-logDone; exited <- cmd.Wait() }()

	var addr string
	select {
	case addr = <-admin:
	case <-logDone:
		t.Fatalf("the broker exited before its admin listener was up:\n%s", logLines.String())
	case <-time.After(30 * time.Second):
		t.Fatal("the broker did not log its admin address within 30s")
	}
	if out, err := exec.Command(bin, "get", "demo", "--socket", sock).CombinedOutput(); err != nil {
		t.Fatalf("credbroker get demo: %v\n%s", err, out)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	samples = map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			families = append(families, strings.Fields(f)[0])
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		samples[name] = true
	}
	return samples, families
}

// adminListening finds the admin address in the broker's text log.
var adminListening = regexp.MustCompile(`msg="admin listening" addr=(\S+)`)

func grafanaCopyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func grafanaWriteFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// mapKeys returns the keys of m that begin with prefix.
func grafanaKeys(m map[string]bool, prefix string) []string {
	var out []string
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}
