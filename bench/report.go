package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// roundRecord is one measured round, as written to the JSON file.
type roundRecord struct {
	Phase        string  `json:"phase"` // "closed", "open", "mixed", "sessions"
	Site         string  `json:"site"`
	Round        int     `json:"round"`
	Requests     int     `json:"requests"`
	Seconds      float64 `json:"seconds"`
	RPS          float64 `json:"rps"`
	P50ms        float64 `json:"p50_ms"`
	P99ms        float64 `json:"p99_ms"`
	CaddyCPUus   float64 `json:"caddy_cpu_us_per_req"`
	GenCPUus     float64 `json:"generator_cpu_us_per_req"`
	UpstreamCPUs float64 `json:"upstream_cpu_us_per_req"`
	PeakRSSMB    float64 `json:"peak_rss_mb"`
	Late         int     `json:"late,omitempty"`
	// OtherCPUPct is the machine's CPU used during the round by anything
	// but Caddy, the generator and the upstream, in percent of all CPUs;
	// StealPct is the time the hypervisor gave to other guests. Both are
	// noise (Noise is their sum).
	OtherCPUPct float64 `json:"other_cpu_pct"`
	StealPct    float64 `json:"steal_pct"`
	// Shared says the site shared the round with others, request by
	// request (the mixed phase): the CPU, RSS and noise figures are the
	// round's, the same for all of them.
	Shared bool `json:"shared,omitempty"`
}

// Noise is the share of the machine that was not ours during the round.
func (r roundRecord) Noise() float64 { return r.OtherCPUPct + r.StealPct }

// siteAcc accumulates a site's rounds within one phase.
type siteAcc struct {
	site, desc string
	rounds     []roundRecord
	samples    []uint32
	delays     []uint32
	requests   int
	late       int
	elapsed    time.Duration
	caddyCPU   time.Duration
	genCPU     time.Duration
	upCPU      time.Duration
	peakRSSMB  float64
}

// add takes in one round; cpu is Caddy's, the generator's and the
// upstream's CPU time during it.
func (a *siteAcc) add(rec roundRecord, res roundResult, cpu [3]time.Duration) {
	a.rounds = append(a.rounds, rec)
	a.samples = append(a.samples, res.Samples...)
	a.delays = append(a.delays, res.Delays...)
	a.requests += res.Requests
	a.late += res.Late
	a.elapsed += res.Elapsed
	a.caddyCPU += cpu[0]
	a.genCPU += cpu[1]
	a.upCPU += cpu[2]
	a.peakRSSMB = max(a.peakRSSMB, rec.PeakRSSMB)
}

// summary is one site's result in one phase: the table row.
type summary struct {
	Site         string  `json:"site"`
	Desc         string  `json:"description"`
	Rounds       int     `json:"rounds"`
	Requests     int     `json:"requests"`
	Seconds      float64 `json:"seconds"`
	RPS          float64 `json:"rps"`           // all requests ÷ all measured time
	RPSSpread    float64 `json:"rps_stdev_pct"` // standard deviation of the rounds' req/s, in % of their mean
	P50ms        float64 `json:"p50_ms"`
	P90ms        float64 `json:"p90_ms"`
	P99ms        float64 `json:"p99_ms"`
	P999ms       float64 `json:"p999_ms"`
	Maxms        float64 `json:"max_ms"`
	CaddyCPUus   float64 `json:"caddy_cpu_us_per_req"`
	GenCPUus     float64 `json:"generator_cpu_us_per_req"`
	UpstreamCPUs float64 `json:"upstream_cpu_us_per_req"`
	PeakRSSMB    float64 `json:"peak_rss_mb"`
	LatePct      float64 `json:"late_pct,omitempty"`
	// SendDelayP50ms and SendDelayP99ms (open loop): how late after their
	// scheduled time on-time requests went out, the generator's own delay.
	SendDelayP50ms float64 `json:"send_delay_p50_ms,omitempty"`
	SendDelayP99ms float64 `json:"send_delay_p99_ms,omitempty"`
	NoisePct       float64 `json:"noise_pct"` // other processes' and the hypervisor's share of the CPUs, mean over the rounds
}

func (a *siteAcc) summarize() summary {
	slices.Sort(a.samples)
	s := summary{
		Site:      a.site,
		Desc:      a.desc,
		Rounds:    len(a.rounds),
		Requests:  a.requests,
		Seconds:   a.elapsed.Seconds(),
		P50ms:     ms(percentile(a.samples, 50)),
		P90ms:     ms(percentile(a.samples, 90)),
		P99ms:     ms(percentile(a.samples, 99)),
		P999ms:    ms(percentile(a.samples, 99.9)),
		Maxms:     ms(percentile(a.samples, 100)),
		PeakRSSMB: a.peakRSSMB,
	}
	if len(a.delays) > 0 {
		slices.Sort(a.delays)
		s.SendDelayP50ms, s.SendDelayP99ms = ms(percentile(a.delays, 50)), ms(percentile(a.delays, 99))
	}
	if a.elapsed > 0 {
		s.RPS = float64(a.requests) / a.elapsed.Seconds()
	}
	if a.requests > 0 {
		n := float64(a.requests)
		s.CaddyCPUus = float64(a.caddyCPU.Microseconds()) / n
		s.GenCPUus = float64(a.genCPU.Microseconds()) / n
		s.UpstreamCPUs = float64(a.upCPU.Microseconds()) / n
		s.LatePct = 100 * float64(a.late) / n
	}
	var rps []float64
	for _, r := range a.rounds {
		rps = append(rps, r.RPS)
		s.NoisePct += r.Noise() / float64(len(a.rounds))
	}
	s.RPSSpread = stdevPct(rps)
	return s
}

// percentile returns the nearest-rank p-th percentile (0 < p ≤ 100) of
// sorted, or 0 for no samples.
func percentile(sorted []uint32, p float64) uint32 {
	if len(sorted) == 0 {
		return 0
	}
	// The small margin keeps float error from rounding an exact rank up
	// (99.9 % of 1000 is 999, not 1000).
	rank := int(math.Ceil(p/100*float64(len(sorted)) - 1e-6))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// stdevPct is the sample standard deviation of v in percent of its mean:
// how much the rounds of one site disagree, a rough error bar.
func stdevPct(v []float64) float64 {
	if len(v) < 2 {
		return 0
	}
	var sum float64
	for _, x := range v {
		sum += x
	}
	mean := sum / float64(len(v))
	if mean == 0 {
		return 0
	}
	var sq float64
	for _, x := range v {
		sq += (x - mean) * (x - mean)
	}
	return 100 * math.Sqrt(sq/float64(len(v)-1)) / mean
}

func ms(ns uint32) float64 { return float64(ns) / 1e6 }

// ratio compares a site with the baseline (A, or the smallest session
// count) round by round: round i of the site against round i of the
// baseline, which ran in the same rotation, moments apart. Each number is
// the median over those pairs, so one round hit by a noisy neighbour
// cannot swing it.
type ratio struct {
	Name     string  `json:"name"` // "B/A"
	Pairs    int     `json:"pairs"`
	RPS      float64 `json:"rps"`
	P50      float64 `json:"p50"`
	P99      float64 `json:"p99"`
	CaddyCPU float64 `json:"caddy_cpu_per_req"`
	PeakRSS  float64 `json:"peak_rss"`
	// AddedP99ms is the median of the paired differences of p99, in ms;
	// AddedP99MinMs and AddedP99MaxMs are their range.
	AddedP50ms    float64 `json:"added_p50_ms"`
	AddedP99ms    float64 `json:"added_p99_ms"`
	AddedP99MinMs float64 `json:"added_p99_min_ms"`
	AddedP99MaxMs float64 `json:"added_p99_max_ms"`
	// AddedCPUus is the median of the paired differences of Caddy's CPU
	// per request, in µs: what the site costs Caddy on top of the baseline.
	AddedCPUus float64 `json:"added_caddy_cpu_us_per_req"`
	// Intervals of the medians the targets use (see medianInterval), and
	// how likely each is to hold the true median.
	RPSInterval        [2]float64 `json:"rps_interval"`
	CaddyCPUInterval   [2]float64 `json:"caddy_cpu_per_req_interval"`
	AddedP99Interval   [2]float64 `json:"added_p99_ms_interval"`
	IntervalConfidence float64    `json:"interval_confidence"`
}

func pairedRatio(s, base *siteAcc) ratio {
	n := min(len(s.rounds), len(base.rounds))
	q := ratio{Name: s.site + "/" + base.site, Pairs: n}
	if n == 0 {
		nan := math.NaN()
		q.RPS, q.P50, q.P99, q.CaddyCPU, q.PeakRSS = nan, nan, nan, nan, nan
		q.AddedP50ms, q.AddedP99ms, q.AddedP99MinMs, q.AddedP99MaxMs, q.AddedCPUus = nan, nan, nan, nan, nan
		q.RPSInterval, q.CaddyCPUInterval, q.AddedP99Interval = [2]float64{nan, nan}, [2]float64{nan, nan}, [2]float64{nan, nan}
		return q
	}
	each := func(f func(x, b roundRecord) float64) []float64 {
		v := make([]float64, n)
		for i := range n {
			v[i] = f(s.rounds[i], base.rounds[i])
		}
		return v
	}
	div := func(a, b float64) float64 {
		if b == 0 {
			return math.NaN()
		}
		return a / b
	}
	rps := each(func(x, b roundRecord) float64 { return div(x.RPS, b.RPS) })
	cpu := each(func(x, b roundRecord) float64 { return div(x.CaddyCPUus, b.CaddyCPUus) })
	q.RPSInterval, q.IntervalConfidence = medianInterval(rps)
	q.CaddyCPUInterval, _ = medianInterval(cpu)
	q.RPS = median(rps)
	q.P50 = median(each(func(x, b roundRecord) float64 { return div(x.P50ms, b.P50ms) }))
	q.P99 = median(each(func(x, b roundRecord) float64 { return div(x.P99ms, b.P99ms) }))
	q.CaddyCPU = median(cpu)
	q.PeakRSS = median(each(func(x, b roundRecord) float64 { return div(x.PeakRSSMB, b.PeakRSSMB) }))
	q.AddedP50ms = median(each(func(x, b roundRecord) float64 { return x.P50ms - b.P50ms }))
	q.AddedCPUus = median(each(func(x, b roundRecord) float64 { return x.CaddyCPUus - b.CaddyCPUus }))
	d := each(func(x, b roundRecord) float64 { return x.P99ms - b.P99ms })
	q.AddedP99Interval, _ = medianInterval(d)
	q.AddedP99ms = median(d)
	q.AddedP99MinMs, q.AddedP99MaxMs = slices.Min(d), slices.Max(d)
	return q
}

// intervalText gives q's added-p99 interval and its confidence, or says
// there is none: a single round pair bounds nothing.
func intervalText(q ratio) string {
	if q.Pairs < 2 {
		return fmt.Sprintf("%d round: no interval", q.Pairs)
	}
	return fmt.Sprintf("%.0f%% interval %+.3f…%+.3f ms", 100*q.IntervalConfidence, q.AddedP99Interval[0], q.AddedP99Interval[1])
}

// medianInterval is a distribution-free interval for the median of the
// population v was drawn from (the sign-test interval): the k-th smallest
// and k-th largest of v, with the largest k whose confidence, 1 − 2·P(X <
// k) for X ~ Binomial(n, ½), is still at least 95 %. With fewer than six
// values no k reaches 95 %; the interval is then the whole range, with
// its lower confidence. v is not changed.
func medianInterval(v []float64) ([2]float64, float64) {
	n := len(v)
	if n == 0 {
		return [2]float64{math.NaN(), math.NaN()}, 0
	}
	sorted := slices.Clone(v)
	slices.Sort(sorted)
	// below[j] = P(X ≤ j), X ~ Binomial(n, ½)
	below := make([]float64, n+1)
	c, sum := 1.0, 0.0
	for j := 0; j <= n; j++ {
		if j > 0 {
			c = c * float64(n-j+1) / float64(j)
		}
		sum += c
		below[j] = sum / math.Pow(2, float64(n))
	}
	conf := func(k int) float64 { return 1 - 2*below[k-1] }
	k := 1
	for k+1 <= (n+1)/2 && conf(k+1) >= 0.95 {
		k++
	}
	return [2]float64{sorted[k-1], sorted[n-k]}, conf(k)
}

// median of v (NaN for none); v is reordered.
func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	m := len(v) / 2
	if len(v)%2 == 1 {
		return v[m]
	}
	return (v[m-1] + v[m]) / 2
}

// phaseResults is the outcome of one phase: a row per site and the ratios of
// every site to the first one. When H ran, B and C are also compared with
// it (B/H, C/H): against plain Caddy carrying the same identity headers,
// which is what the gate's own work costs.
func phaseResults(accs []*siteAcc) ([]summary, []ratio) {
	sums := make([]summary, len(accs))
	var ratios []ratio
	var h *siteAcc
	for i, a := range accs {
		sums[i] = a.summarize()
		if i > 0 {
			ratios = append(ratios, pairedRatio(a, accs[0]))
		}
		if a.site == "H" {
			h = a
		}
	}
	if h != nil && h != accs[0] {
		for _, a := range accs {
			if a.site == "B" || a.site == "C" {
				ratios = append(ratios, pairedRatio(a, h))
			}
		}
	}
	return sums, ratios
}

// goal is one target of issue 5, evaluated.
type goal struct {
	Name      string  `json:"name"`
	Value     float64 `json:"value"`
	Op        string  `json:"op"` // ">=", "<="
	Threshold float64 `json:"threshold"`
	Unit      string  `json:"unit,omitempty"`
	Pass      bool    `json:"pass"`
	// Interval is where the value lies with Confidence (the round pairs'
	// median interval); Settled says it lies wholly on Pass's side of the
	// threshold, with a confidence of at least minSettled, so more rounds
	// would not be expected to change the verdict.
	Interval   [2]float64 `json:"interval"`
	Confidence float64    `json:"confidence"`
	Settled    bool       `json:"settled"`
}

func newGoal(name string, value float64, op string, threshold float64, unit string, interval [2]float64, confidence float64) goal {
	g := goal{Name: name, Value: value, Op: op, Threshold: threshold, Unit: unit, Interval: interval, Confidence: confidence}
	meets := func(v float64) bool {
		switch op {
		case ">=":
			return v >= threshold
		case "<=":
			return v <= threshold
		case "<":
			return v < threshold
		}
		return false
	}
	g.Pass = !math.IsNaN(value) && meets(value)
	g.Settled = confidence >= minSettled && !math.IsNaN(interval[0]) && meets(interval[0]) == g.Pass && meets(interval[1]) == g.Pass
	return g
}

// minSettled is the least confidence a verdict is settled with: two
// round pairs (-quick) give an interval of their range at 50 %, which
// may lie on one side of the threshold by chance.
const minSettled = 0.9

func (g goal) String() string {
	verdict := "MISS"
	if g.Pass {
		verdict = "PASS"
	}
	op := map[string]string{">=": "≥", "<=": "≤", "<": "<"}[g.Op]
	line := fmt.Sprintf("%s  %-48s %s %s %s", verdict, g.Name, num(g.Value, 3)+g.Unit, op, num(g.Threshold, 3)+g.Unit)
	if math.IsNaN(g.Interval[0]) {
		return line
	}
	line += fmt.Sprintf("   %.0f%% interval %s…%s", 100*g.Confidence, num(g.Interval[0], 3), num(g.Interval[1], 3)+g.Unit)
	if !g.Settled {
		line += ": not settled, more rounds needed"
	}
	return line
}

// results is the whole run, as written to the JSON file.
type results struct {
	StartedAt time.Time      `json:"started_at"`
	Seconds   float64        `json:"seconds"`
	Host      hostInfo       `json:"host"`
	Settings  map[string]any `json:"settings"`
	Caddyfile string         `json:"caddyfile,omitempty"`

	Closed       []summary `json:"closed,omitempty"` // saturation, closed loop
	ClosedRatios []ratio   `json:"closed_ratios,omitempty"`
	OpenRate     float64   `json:"open_rate,omitempty"` // req/s of the open-loop phase
	Open         []summary `json:"open,omitempty"`
	OpenRatios   []ratio   `json:"open_ratios,omitempty"`
	// OpenGate is the gates' own time during the open loop, from their
	// sigra_gate_duration_seconds histogram (sites B and C together).
	OpenGate *gateLatency `json:"open_gate,omitempty"`

	// Mixed is the interleaved phase: the sites share each round,
	// request by request, at MixedRate req/s in all. Caddy's CPU and RSS
	// there are the round's, shared by the sites: only the latency
	// fields of Mixed and MixedRatios tell sites apart.
	MixedRate   float64   `json:"mixed_rate,omitempty"`
	Mixed       []summary `json:"mixed,omitempty"`
	MixedRatios []ratio   `json:"mixed_ratios,omitempty"`

	Sessions       []summary `json:"sessions,omitempty"` // site B with N sessions in the store; Site is N
	SessionsRatios []ratio   `json:"sessions_ratios,omitempty"`

	Goals  []goal        `json:"goals"`
	Rounds []roundRecord `json:"rounds"`
	Notes  []string      `json:"notes,omitempty"`
}

type hostInfo struct {
	CPUs       int    `json:"cpus"`
	CPUModel   string `json:"cpu_model,omitempty"`
	Kernel     string `json:"kernel,omitempty"`
	GoVersion  string `json:"go_version"`
	GenProcs   int    `json:"generator_gomaxprocs"`
	CaddyProcs int    `json:"caddy_gomaxprocs"` // 0: Caddy's default
	Caddy      string `json:"caddy_version"`
}

// writeJSON writes r to path, indented. A figure that is not a number
// (a ratio to a round that measured nothing, a percentile past the
// histogram's last bound) is null, which JSON has and NaN and ±Inf are
// not: encoding/json refuses them, and the whole file with them. r's
// non-finite figures are changed to do so.
func writeJSON(path string, r *results) error {
	unknownToSentinel(reflect.ValueOf(r).Elem())
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	b = bytes.ReplaceAll(b, []byte(strconv.FormatFloat(jsonUnknown, 'g', -1, 64)), []byte("null"))
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// jsonUnknown stands in for a non-finite figure until it is written as
// null: encoding/json writes it as 1.7976931348623157e+308, and no
// measured figure is that.
const jsonUnknown = math.MaxFloat64

// unknownToSentinel sets every NaN or ±Inf float reachable from v
// (exported struct fields, slices, arrays, pointers) to jsonUnknown.
func unknownToSentinel(v reflect.Value) {
	switch v.Kind() {
	case reflect.Float32, reflect.Float64:
		if f := v.Float(); v.CanSet() && (math.IsNaN(f) || math.IsInf(f, 0)) {
			v.SetFloat(jsonUnknown)
		}
	case reflect.Pointer:
		if !v.IsNil() {
			unknownToSentinel(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				unknownToSentinel(v.Field(i))
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			unknownToSentinel(v.Index(i))
		}
	}
}

// writeCPUPhase writes a closed-loop phase: its table, and what each
// site adds to the baseline's Caddy CPU per request.
func writeCPUPhase(w io.Writer, sums []summary, ratios []ratio) {
	writeTable(w, siteTable(sums, ratios, false, false))
	for _, q := range ratios {
		fmt.Fprintf(w, "added Caddy CPU %s: %+.1f µs per request\n", difference(q.Name), q.AddedCPUus)
	}
}

// difference names a ratio's pair as a difference: "B/A" is "B−A".
func difference(ratioName string) string { return strings.Replace(ratioName, "/", "−", 1) }

// printReport writes the human-readable tables.
func printReport(w io.Writer, r *results, conns int) {
	fmt.Fprintf(w, "\nSigra gate benchmark: %d CPUs (%s), %s, %s\n", r.Host.CPUs, r.Host.CPUModel, r.Host.Caddy, r.Host.GoVersion)
	if len(r.Closed) > 0 {
		fmt.Fprintf(w, "\nSaturation (closed loop, %d keep-alive connections; rounds interleaved A,B,C,…)\n", conns)
		writeCPUPhase(w, r.Closed, r.ClosedRatios)
	}
	if len(r.Open) > 0 {
		fmt.Fprintf(w, "\nModerate load (open loop at %s req/s, latency from the scheduled send time)\n", num(r.OpenRate, 0))
		writeTable(w, siteTable(r.Open, r.OpenRatios, true, false))
		for _, q := range r.OpenRatios {
			fmt.Fprintf(w, "added latency %s: p50 %+.3f ms, p99 %+.3f ms (p99 per round pair from %+.3f to %+.3f ms)\n",
				difference(q.Name), q.AddedP50ms, q.AddedP99ms, q.AddedP99MinMs, q.AddedP99MaxMs)
		}
		var delays []string
		for _, x := range r.Open {
			delays = append(delays, fmt.Sprintf("%s %.3f/%.3f", x.Site, x.SendDelayP50ms, x.SendDelayP99ms))
		}
		fmt.Fprintf(w, "the generator's send delay, p50/p99 ms (on-time requests went out this late, and their latency counts from then): %s\n", strings.Join(delays, ", "))
		if g := r.OpenGate; g != nil && g.Decisions > 0 {
			fmt.Fprintf(w, "the gates' own time inside Caddy (%s, %s decisions): mean %.1f µs, p50 ≤ %s µs, p99 ≤ %s µs\n",
				gateHistName, num(g.Decisions, 0), g.MeanUs, num(g.P50MaxUs, 1), num(g.P99MaxUs, 1))
		}
	}
	if len(r.Mixed) > 0 {
		fmt.Fprintf(w, "\nThe same load, the sites taking turns request by request in each round (%s req/s in all: the load and the machine's stalls are the same for every site; CPU and RSS are shared)\n", num(r.MixedRate, 0))
		writeTable(w, siteTable(r.Mixed, r.MixedRatios, true, true))
		for _, q := range r.MixedRatios {
			fmt.Fprintf(w, "added latency per request %s: p50 %+.3f ms, p99 %+.3f ms (%s)\n",
				difference(q.Name), q.AddedP50ms, q.AddedP99ms, intervalText(q))
		}
	}
	if len(r.Sessions) > 0 {
		fmt.Fprintf(w, "\nSessions in the store (site B, closed loop, %d connections, a random session per request)\n", conns)
		writeCPUPhase(w, r.Sessions, r.SessionsRatios)
	}
	if len(r.Goals) > 0 {
		fmt.Fprintln(w, "\nTargets")
		for _, g := range r.Goals {
			fmt.Fprintln(w, g)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

// siteTable lays out one phase: a row per site, then the ratio rows.
// shared: the sites shared their rounds, and so their CPU and RSS, which
// the ratio rows then leave out.
func siteTable(sums []summary, ratios []ratio, open, shared bool) [][]string {
	head := []string{"site", "", "req/s", "±%", "p50 ms", "p99 ms", "p99.9 ms", "caddy CPU µs/req", "peak RSS MB", "gen+up CPU µs/req", "noise %"}
	if open {
		head[3] = "late%"
	}
	rows := [][]string{head}
	for _, s := range sums {
		spread := num(s.RPSSpread, 1)
		if open {
			spread = num(s.LatePct, 1)
		}
		rows = append(rows, []string{
			s.Site, s.Desc, num(s.RPS, 0), spread, num(s.P50ms, 3), num(s.P99ms, 3), num(s.P999ms, 3),
			num(s.CaddyCPUus, 1), num(s.PeakRSSMB, 1), num(s.GenCPUus, 1) + "+" + num(s.UpstreamCPUs, 1), num(s.NoisePct, 1),
		})
	}
	for _, q := range ratios {
		cpu, rss := num(q.CaddyCPU, 2), num(q.PeakRSS, 2)
		if shared {
			cpu, rss = "", ""
		}
		rows = append(rows, []string{
			q.Name, "ratio (median of round pairs)", num(q.RPS, 3), "", num(q.P50, 2), num(q.P99, 2), "",
			cpu, rss, "", "",
		})
	}
	return rows
}

// writeTable prints rows as columns: the first two left-aligned, the
// others right-aligned, two spaces apart.
func writeTable(w io.Writer, rows [][]string) {
	var widths []int
	for _, r := range rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, c := range r {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
			if i > 0 {
				b.WriteString("  ")
			}
			if i < 2 {
				b.WriteString(c + pad)
			} else {
				b.WriteString(pad + c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// num formats v with prec decimals; NaN (a missing baseline) prints as "-".
func num(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

// evaluate checks the targets of issue 5 against what was measured.
func evaluate(r *results) []goal {
	var goals []goal
	for _, q := range r.ClosedRatios {
		switch q.Name {
		case "B/A":
			goals = append(goals, newGoal("saturation throughput B/A (gate)", q.RPS, ">=", 0.95, "", q.RPSInterval, q.IntervalConfidence))
		case "C/A":
			goals = append(goals, newGoal("saturation throughput C/A (gate + requirements)", q.RPS, ">=", 0.90, "", q.RPSInterval, q.IntervalConfidence))
		}
	}
	var bh, ha *ratio
	for i := range r.ClosedRatios {
		switch r.ClosedRatios[i].Name {
		case "B/H":
			bh = &r.ClosedRatios[i]
		case "H/A":
			ha = &r.ClosedRatios[i]
		}
	}
	if bh != nil && ha != nil {
		r.Notes = append(r.Notes, fmt.Sprintf("identity headers alone (H, no gate): H/A %.3f, %+.1f µs Caddy CPU per request; the gate's own work against H: B/H %.3f (%.0f%% interval %.3f…%.3f), %+.1f µs",
			ha.RPS, ha.AddedCPUus, bh.RPS, 100*bh.IntervalConfidence, bh.RPSInterval[0], bh.RPSInterval[1], bh.AddedCPUus))
	}
	// A2 is A again: whatever separates it from A is the machine, and a
	// difference of that size between A and B says nothing about the gate.
	for _, q := range r.ClosedRatios {
		if q.Name == "A2/A" {
			r.Notes = append(r.Notes, fmt.Sprintf("control A2 (A again) at saturation: A2/A %.3f, %+.1f µs Caddy CPU per request: this machine's noise", q.RPS, q.AddedCPUus))
		}
	}
	for _, q := range r.OpenRatios {
		if q.Name == "A2/A" {
			r.Notes = append(r.Notes, fmt.Sprintf("control A2 (A again) at %s req/s: added p99 %+.3f ms (per round pair %+.3f to %+.3f ms): this machine's noise", num(r.OpenRate, 0), q.AddedP99ms, q.AddedP99MinMs, q.AddedP99MaxMs))
		}
	}
	for _, q := range r.OpenRatios {
		if q.Name == "B/A" || q.Name == "C/A" {
			site, _, _ := strings.Cut(q.Name, "/")
			goals = append(goals, newGoal(fmt.Sprintf("added p99 latency %s−A at %s req/s", site, num(r.OpenRate, 0)), q.AddedP99ms, "<=", 0.2, " ms", q.AddedP99Interval, q.IntervalConfidence))
		}
	}
	// The target is judged on rounds of their own, where all the load is
	// the site's; the interleaved phase splits that figure (a note, not a
	// target).
	for _, q := range r.MixedRatios {
		if q.Name == "B/A" || q.Name == "C/A" {
			r.Notes = append(r.Notes, fmt.Sprintf("with the load held equal (sites interleaved request by request), %s's requests gain p99 %+.3f ms (%s), p50 %+.3f ms: the rest of the added p99 above is the machine busier with the site's extra CPU, and its noise",
				difference(q.Name), q.AddedP99ms, intervalText(q), q.AddedP50ms))
		}
	}
	if n := len(r.SessionsRatios); n > 0 {
		q := r.SessionsRatios[n-1]
		most, fewest, _ := strings.Cut(q.Name, "/")
		lo, hi := math.Abs(q.CaddyCPUInterval[0]-1), math.Abs(q.CaddyCPUInterval[1]-1)
		change := [2]float64{100 * min(lo, hi), 100 * max(lo, hi)}
		if q.CaddyCPUInterval[0] <= 1 && 1 <= q.CaddyCPUInterval[1] {
			change[0] = 0
		}
		goals = append(goals, newGoal(fmt.Sprintf("CPU per request change, %s→%s sessions", fewest, most), 100*math.Abs(q.CaddyCPU-1), "<", 10, " %", change, q.IntervalConfidence))
		r.Notes = append(r.Notes, fmt.Sprintf("%s→%s sessions (informational): throughput %+.1f%%, p50 %+.1f%%, p99 %+.1f%%",
			fewest, most, 100*(q.RPS-1), 100*(q.P50-1), 100*(q.P99-1)))
		if a, _ := r.Settings["active"].(string); a != "0" {
			r.Notes = append(r.Notes, fmt.Sprintf("sessions: with %s sessions in use (-active), the gate's session cache answers nearly every request, so this target shows what a big store costs the usual request; what a store read costs at each size is BenchmarkSessionLookup's (go test ./bench -run '^$' -bench SessionLookup)", a))
		}
	}
	return goals
}
