package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestPercentile(t *testing.T) {
	var s []uint32
	for i := 1; i <= 100; i++ {
		s = append(s, uint32(i))
	}
	tests := []struct {
		p    float64
		want uint32
	}{{50, 50}, {99, 99}, {99.9, 100}, {100, 100}, {1, 1}, {0.1, 1}}
	for _, tt := range tests {
		if got := percentile(s, tt.p); got != tt.want {
			t.Errorf("percentile(1..100, %v) = %d; want %d", tt.p, got, tt.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile(nil) = %d; want 0", got)
	}
	if got := percentile([]uint32{7}, 99); got != 7 {
		t.Errorf("percentile([7], 99) = %d; want 7", got)
	}
	// Exact ranks stay exact despite float error: 99.9 % of 1000 samples
	// is the 999th, 99 % of 300000 the 297000th.
	for _, n := range []int{1000, 10000, 300000} {
		s := make([]uint32, n)
		for i := range s {
			s[i] = uint32(i + 1)
		}
		for _, p := range []float64{50, 90, 99, 99.9} {
			want := uint32(math.Round(p / 100 * float64(n)))
			if got := percentile(s, p); got != want {
				t.Errorf("percentile(1..%d, %v) = %d; want %d", n, p, got, want)
			}
		}
	}
}

// TestRoundOrder checks the Williams design: within a cycle every site is
// in every position equally often and right after every other site
// equally often, and each round holds every site once.
func TestRoundOrder(t *testing.T) {
	for n := 1; n <= 7; n++ {
		cycle := orderCycle(n)
		pos := make([][]int, n)
		for i := range pos {
			pos[i] = make([]int, n)
		}
		after := map[[2]int]int{}
		for r := range cycle {
			row := roundOrder(n, r)
			seen := make([]bool, n)
			for j, i := range row {
				if seen[i] {
					t.Fatalf("n=%d round %d: %v has site %d twice", n, r, row, i)
				}
				seen[i] = true
				pos[i][j]++
				if j > 0 {
					after[[2]int{row[j-1], i}]++
				}
			}
		}
		for i := range n {
			for j := range n {
				if pos[i][j] != cycle/n {
					t.Errorf("n=%d: site %d in position %d %d times; want %d", n, i, j, pos[i][j], cycle/n)
				}
			}
		}
		for a := range n {
			for b := range n {
				if a != b && after[[2]int{a, b}] != cycle/n {
					t.Errorf("n=%d: site %d right after %d %d times; want %d", n, b, a, after[[2]int{a, b}], cycle/n)
				}
			}
		}
		if got, want := roundOrder(n, cycle), roundOrder(n, 0); !slices.Equal(got, want) {
			t.Errorf("n=%d: round %d = %v; want the first round again, %v", n, cycle, got, want)
		}
	}
}

func TestMedianAndStdev(t *testing.T) {
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median odd = %v; want 2", got)
	}
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median even = %v; want 2.5", got)
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median(nil) is not NaN")
	}
	if got := stdevPct([]float64{90, 100, 110}); math.Abs(got-10) > 1e-9 {
		t.Errorf("stdev = %v%%; want 10%%", got)
	}
	if got := stdevPct([]float64{5}); got != 0 {
		t.Errorf("stdev of one round = %v; want 0", got)
	}
}

func TestPairedRatio(t *testing.T) {
	a := &siteAcc{site: "A"}
	b := &siteAcc{site: "B"}
	for i, r := range []struct{ a, b float64 }{{1000, 950}, {1000, 500}, {1200, 1188}} {
		a.rounds = append(a.rounds, roundRecord{Round: i + 1, RPS: r.a, P99ms: 1, CaddyCPUus: 100, P50ms: 0.5, PeakRSSMB: 50})
		b.rounds = append(b.rounds, roundRecord{Round: i + 1, RPS: r.b, P99ms: 1 + float64(i)/10, CaddyCPUus: 110, P50ms: 0.5, PeakRSSMB: 50})
	}
	q := pairedRatio(b, a)
	// Per pair: 0.95, 0.5 (a disturbed round), 0.99: the median ignores the outlier.
	if q.Name != "B/A" || q.Pairs != 3 || math.Abs(q.RPS-0.95) > 1e-9 {
		t.Errorf("got %s over %d pairs, RPS ratio %v; want B/A, 3, 0.95", q.Name, q.Pairs, q.RPS)
	}
	if math.Abs(q.CaddyCPU-1.1) > 1e-9 || math.Abs(q.AddedCPUus-10) > 1e-9 || math.Abs(q.AddedP99ms-0.1) > 1e-9 || q.AddedP99MinMs != 0 || math.Abs(q.AddedP99MaxMs-0.2) > 1e-9 {
		t.Errorf("got %+v", q)
	}
}

// With H in the run, B and C are also compared with it: the gate's own
// cost, apart from the headers it adds. Without H there are no such rows.
func TestPhaseResultsAgainstH(t *testing.T) {
	acc := func(site string, rps float64) *siteAcc {
		a := &siteAcc{site: site}
		for i := range 3 {
			a.rounds = append(a.rounds, roundRecord{Round: i + 1, RPS: rps, P50ms: 0.5, P99ms: 1, CaddyCPUus: 1e6 / rps, PeakRSSMB: 50})
		}
		return a
	}
	names := func(qs []ratio) []string {
		var n []string
		for _, q := range qs {
			n = append(n, q.Name)
		}
		return n
	}
	_, qs := phaseResults([]*siteAcc{acc("A", 1000), acc("B", 860), acc("C", 850), acc("H", 880), acc("A2", 990)})
	if got, want := names(qs), []string{"B/A", "C/A", "H/A", "A2/A", "B/H", "C/H"}; !slices.Equal(got, want) {
		t.Fatalf("ratios %v; want %v", got, want)
	}
	if bh := qs[4]; math.Abs(bh.RPS-860.0/880) > 1e-9 || math.Abs(bh.AddedCPUus-(1e6/860-1e6/880)) > 1e-9 {
		t.Errorf("B/H: throughput %v, added CPU %v µs; want %v, %v", bh.RPS, bh.AddedCPUus, 860.0/880, 1e6/860-1e6/880)
	}
	_, qs = phaseResults([]*siteAcc{acc("A", 1000), acc("B", 860), acc("C", 850)})
	if got, want := names(qs), []string{"B/A", "C/A"}; !slices.Equal(got, want) {
		t.Errorf("without H: ratios %v; want %v", got, want)
	}
}

func TestGoal(t *testing.T) {
	none := [2]float64{math.NaN(), math.NaN()}
	tests := []struct {
		g       goal
		pass    bool
		settled bool
		text    string
	}{
		{newGoal("throughput B/A", 0.96, ">=", 0.95, "", [2]float64{0.955, 0.97}, 0.98), true, true, "PASS  throughput B/A"},
		{newGoal("throughput C/A", 0.85, ">=", 0.90, "", [2]float64{0.80, 0.88}, 0.98), false, true, "MISS  throughput C/A"},
		{newGoal("added p99", 0.25, "<=", 0.2, " ms", [2]float64{0.1, 0.4}, 0.98), false, false, "0.250 ms ≤ 0.200 ms   98% interval 0.100…0.400 ms: not settled"},
		{newGoal("change", 3, "<", 10, " %", [2]float64{0, 6}, 0.96), true, true, "3.000 % < 10.000 %   96% interval 0.000…6.000 %"},
		{newGoal("nothing measured", math.NaN(), "<", 10, "", none, 0), false, false, "MISS  nothing measured"},
		{newGoal("two pairs", 0.93, ">=", 0.95, "", [2]float64{0.92, 0.94}, 0.5), false, false, "50% interval 0.920…0.940: not settled"},
	}
	for _, tt := range tests {
		if tt.g.Pass != tt.pass || tt.g.Settled != tt.settled {
			t.Errorf("%s: pass %v settled %v; want %v, %v", tt.g.Name, tt.g.Pass, tt.g.Settled, tt.pass, tt.settled)
		}
		if s := tt.g.String(); !strings.Contains(s, tt.text) {
			t.Errorf("%q does not contain %q", s, tt.text)
		}
	}
	if s := tests[1].g.String(); strings.Contains(s, "not settled") {
		t.Errorf("%q: a miss with its whole interval below the target is settled", s)
	}
}

// TestMedianInterval checks the sign-test interval against values worked
// out by hand: for 10 pairs the 2nd smallest and 2nd largest (97.9 %),
// for 24 the 7th (97.7 %), below 6 the whole range.
func TestMedianInterval(t *testing.T) {
	seq := func(n int) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = float64(n - i) // descending: the function must sort
		}
		return v
	}
	tests := []struct {
		n      int
		lo, hi float64
		conf   float64
	}{
		{10, 2, 9, 1 - 2*11.0/1024},
		{24, 7, 18, 0.9773},
		{6, 1, 6, 1 - 2.0/64},
		{5, 1, 5, 1 - 2.0/32},
		{1, 1, 1, 0},
	}
	for _, tt := range tests {
		v := seq(tt.n)
		iv, conf := medianInterval(v)
		if iv[0] != tt.lo || iv[1] != tt.hi || math.Abs(conf-tt.conf) > 1e-4 {
			t.Errorf("n=%d: [%v, %v] at %.4f; want [%v, %v] at %.4f", tt.n, iv[0], iv[1], conf, tt.lo, tt.hi, tt.conf)
		}
		if v[0] != float64(tt.n) {
			t.Errorf("n=%d: the input was reordered", tt.n)
		}
	}
	if iv, _ := medianInterval(nil); !math.IsNaN(iv[0]) {
		t.Errorf("no values: %v; want NaN", iv)
	}
}

func TestWriteTable(t *testing.T) {
	var buf bytes.Buffer
	writeTable(&buf, [][]string{
		{"site", "", "req/s", "µs"},
		{"A", "reverse_proxy", "12345", "1.5"},
		{"B/A", "ratio", "0.950", ""},
	})
	want := "" +
		"site                 req/s   µs\n" +
		"A     reverse_proxy  12345  1.5\n" +
		"B/A   ratio          0.950\n"
	if got := buf.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestSiteTableRows(t *testing.T) {
	sums := []summary{{Site: "A", Desc: "reverse_proxy", RPS: 1000, P50ms: 0.5, P99ms: 1}}
	rows := siteTable(sums, []ratio{{Name: "B/A", RPS: math.NaN()}}, false, false)
	if len(rows) != 3 {
		t.Fatalf("%d rows; want header, A, B/A", len(rows))
	}
	for _, r := range rows {
		if len(r) != len(rows[0]) {
			t.Errorf("row %q has %d cells; the header has %d", r[0], len(r), len(rows[0]))
		}
	}
	if rows[2][2] != "-" {
		t.Errorf("a NaN ratio prints as %q; want -", rows[2][2])
	}
}

func TestCaddyfile(t *testing.T) {
	sites, err := parseSites("a, B,C", "mfa; group bench")
	if err != nil {
		t.Fatal(err)
	}
	for i := range sites {
		sites[i].Port = 9001 + i
	}
	got := caddyConf{AdminPort: 9000, DBPath: "/tmp/x/sigra.db", Upstream: "127.0.0.1:9999", Sites: sites}.caddyfile()
	for _, want := range []string{
		"admin 127.0.0.1:9000\n",
		"default_bind 127.0.0.1\n", // the sites listen on loopback only
		"\tsigra {\n\t\tstorage bbolt /tmp/x/sigra.db\n\t}\n",
		"http://127.0.0.1:9001 {\n\treverse_proxy 127.0.0.1:9999\n}\n",
		"http://127.0.0.1:9002 {\n\tsigra_portal\n\tsigra_gate\n\treverse_proxy 127.0.0.1:9999\n}\n",
		"http://127.0.0.1:9003 {\n\tsigra_portal\n\tsigra_gate {\n\t\tmfa\n\t\tgroup bench\n\t}\n\treverse_proxy 127.0.0.1:9999\n}\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Caddyfile lacks %q:\n%s", want, got)
		}
	}
	plain := caddyConf{AdminPort: 1, Upstream: "u", Sites: sites[:1]}.caddyfile()
	if strings.Contains(plain, "sigra") {
		t.Errorf("a plain config mentions sigra:\n%s", plain)
	}
	// -proxy-log=false takes reverse_proxy out of the default log, for
	// every site, in the global block; by default no log is configured.
	const noProxyLog = "\tlog default {\n\t\texclude http.handlers.reverse_proxy\n\t}\n"
	if strings.Contains(got, "log default") {
		t.Errorf("the default config configures a log:\n%s", got)
	}
	quiet := caddyConf{AdminPort: 1, Upstream: "u", Sites: sites, NoProxyLog: true}.caddyfile()
	if head, _, _ := strings.Cut(quiet, "\n}\n"); !strings.Contains(head+"\n", noProxyLog) {
		t.Errorf("-proxy-log=false: the global block lacks %q:\n%s", noProxyLog, quiet)
	}
	// H carries the identity headers and, like the gate, drops the
	// session cookie; A2 is A again.
	sites, err = parseSites("A,H,A2", "mfa")
	if err != nil {
		t.Fatal(err)
	}
	for i := range sites {
		sites[i].Port = 9101 + i
	}
	got = caddyConf{AdminPort: 9100, Upstream: "u", Sites: sites}.caddyfile()
	for _, want := range []string{
		"		header_up X-Sigra-User \"" + siteHUser + "\"\n",
		"		header_up -Cookie\n",
		"http://127.0.0.1:9103 {\n\treverse_proxy u\n}\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Caddyfile lacks %q:\n%s", want, got)
		}
	}
	if _, err := parseSites("A,D", "mfa"); err == nil {
		t.Error("-sites A,D: got no error")
	}
	if _, err := parseSites("C", ""); err == nil {
		t.Error("site C without requirements: got no error")
	}
}

func TestParseCounts(t *testing.T) {
	got, err := parseCounts("1000, 100_000,1000000")
	if err != nil || len(got) != 3 || got[1] != 100000 {
		t.Fatalf("got %v, %v", got, err)
	}
	// Given in any order, or twice: smallest first, once each.
	if got, err := parseCounts("1000000,1000,1000"); err != nil || !slices.Equal(got, []int{1000, 1000000}) {
		t.Errorf("parseCounts(1000000,1000,1000) = %v, %v; want [1000 1000000]", got, err)
	}
	for _, bad := range []string{"0", "x", "-5"} {
		if _, err := parseCounts(bad); err == nil {
			t.Errorf("parseCounts(%q): got no error", bad)
		}
	}
	for n, want := range map[int]string{1000: "1k", 100000: "100k", 1000000: "1M", 1500: "1500", 2500000: "2500k"} {
		if got := humanCount(n); got != want {
			t.Errorf("humanCount(%d) = %q; want %q", n, got, want)
		}
	}
}

// The control A2 is reported as the noise floor, not as a target.
func TestEvaluateControl(t *testing.T) {
	r := &results{
		ClosedRatios: []ratio{{Name: "A2/A", RPS: 0.97, AddedCPUus: 2}},
		OpenRatios:   []ratio{{Name: "A2/A", AddedP99ms: 0.3, AddedP99MinMs: -1, AddedP99MaxMs: 2}},
		OpenRate:     1800,
	}
	goals := evaluate(r)
	if len(goals) != 0 {
		t.Errorf("the control produced targets: %v", goals)
	}
	notes := strings.Join(r.Notes, "\n")
	for _, want := range []string{"A2/A 0.970", "added p99 +0.300 ms (per round pair -1.000 to +2.000 ms)"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes lack %q:\n%s", want, notes)
		}
	}
}

// A figure that is not a number (a ratio to a round that measured no
// CPU, a percentile past the histogram's last bound) is written as null:
// encoding/json refuses NaN and Inf, and the run would lose its whole
// results file after printing the table.
func TestWriteJSONUnknownFigures(t *testing.T) {
	r := &results{
		Seconds:      12.5,
		ClosedRatios: []ratio{{Name: "B/A", RPS: 0.9, CaddyCPU: math.NaN(), RPSInterval: [2]float64{math.Inf(-1), 1}}},
		OpenGate:     &gateLatency{Decisions: 3, MeanUs: 7, P50MaxUs: 10, P99MaxUs: math.Inf(1)},
	}
	path := filepath.Join(t.TempDir(), "results.json")
	if err := writeJSON(path, r); err != nil {
		t.Fatalf("writeJSON: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Seconds      float64 `json:"seconds"`
		ClosedRatios []struct {
			RPS         float64     `json:"rps"`
			CaddyCPU    *float64    `json:"caddy_cpu_per_req"`
			RPSInterval [2]*float64 `json:"rps_interval"`
		} `json:"closed_ratios"`
		OpenGate struct {
			P50 *float64 `json:"p50_at_most_us"`
			P99 *float64 `json:"p99_at_most_us"`
		} `json:"open_gate"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("the file is not JSON: %v\n%s", err, b)
	}
	q := got.ClosedRatios[0]
	if got.Seconds != 12.5 || q.RPS != 0.9 || q.RPSInterval[1] == nil || *q.RPSInterval[1] != 1 || got.OpenGate.P50 == nil || *got.OpenGate.P50 != 10 {
		t.Errorf("finite figures changed: %s", b)
	}
	if q.CaddyCPU != nil || q.RPSInterval[0] != nil || got.OpenGate.P99 != nil {
		t.Errorf("NaN and Inf not written as null: %s", b)
	}
}
