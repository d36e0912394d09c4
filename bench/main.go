// Command bench measures what the Sigra gate costs: one Caddy, built by
// `make caddy`, serves loopback sites from one Caddyfile, all proxying to
// the same tiny upstream:
//
//	A   reverse_proxy                                  (the baseline)
//	B   sigra_portal + sigra_gate + reverse_proxy      (a signed-in session)
//	C   B with every requirement on the gate: mfa, amr, group
//	H   A sending the identity headers B sends         (their cost alone)
//	A2  A again                                        (the machine's noise)
//
// A load generator in this process drives them in interleaved rounds (a
// Williams design, so that drift reaches every site alike): a closed loop
// for saturation throughput, then an open loop at a fixed moderate rate
// for latency, then the sites interleaved request by request. It prints req/s, p50/p99, Caddy's CPU per request and peak RSS,
// the ratios to A, and PASS/MISS against the targets of issue 5, and
// writes the same as JSON. With -sessions it also measures B with many
// sessions in the store. See bench/README.md.
//
// Run from the repository root: `make caddy && go run ./bench`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// config is the command line.
type config struct {
	caddy        string
	sites        string
	require      string
	conns        int
	rounds       int
	duration     time.Duration
	openRounds   int
	mixRounds    int
	openDuration time.Duration
	rate         float64
	rateFraction float64
	warmup       time.Duration
	sessions     string
	active       int
	jsonPath     string
	genProcs     int
	caddyProcs   int
	upProcs      int
	loginCheck   bool
	proxyLog     bool
	keep         bool
	serve        bool
	strict       bool
	timeout      time.Duration
	quick        bool
	noise        float64
	noiseWait    time.Duration
	noiseRetries int
	noiseBudget  time.Duration
}

func main() {
	var cfg config
	upstreamServe := flag.String("upstream-serve", "", "internal: serve as the upstream on this address")
	flag.StringVar(&cfg.caddy, "caddy", "./caddy", "path of the Caddy binary built by make caddy")
	flag.StringVar(&cfg.sites, "sites", "A,B,C,H,A2", "sites to measure, comma-separated; A (plain reverse_proxy) is the baseline of the ratios; H is A plus identity-sized headers, no gate; A2 is A again, the control that shows this machine's noise; empty for none")
	flag.StringVar(&cfg.require, "require", defaultRequire, "site C's gate requirements, ';'-separated lines of the sigra_gate block (e.g. \"mfa;group bench\")")
	flag.IntVar(&cfg.conns, "conns", 16, "keep-alive connections (one worker each); Caddy keeps 32 idle upstream connections, so stay at or below 32")
	flag.IntVar(&cfg.rounds, "rounds", 10, "closed-loop (saturation) rounds per site; 0 skips the phase")
	flag.DurationVar(&cfg.duration, "duration", 2500*time.Millisecond, "length of a closed-loop round")
	flag.IntVar(&cfg.openRounds, "open-rounds", 10, "open-loop (fixed rate) rounds per site; 0 skips the phase")
	flag.IntVar(&cfg.mixRounds, "mix-rounds", 6, "rounds of the interleaved phase, at the open-loop rate: the sites share each round request by request, so the machine's stalls reach all alike and the load is the same for all; it shows what each request gains, without the queueing a site's extra CPU adds; 0 skips it")
	flag.DurationVar(&cfg.openDuration, "open-duration", 2500*time.Millisecond, "length of an open-loop round")
	flag.Float64Var(&cfg.rate, "rate", 0, "open-loop rate in req/s; 0 means -rate-fraction of the slowest site's saturation throughput")
	flag.Float64Var(&cfg.rateFraction, "rate-fraction", 0.25, "open-loop rate as a fraction of the slowest site's saturation throughput, when -rate is 0")
	flag.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "unmeasured closed-loop load per site before the first round")
	flag.StringVar(&cfg.sessions, "sessions", "", "also measure site B with these numbers of sessions in the store, e.g. 1000,100000,1000000")
	flag.IntVar(&cfg.active, "active", 1000, "with -sessions: spread requests over this many of the stored sessions (the signed-in users of the moment); 0 spreads them over all, so nearly every request is a session's first")
	flag.StringVar(&cfg.jsonPath, "json", "bench/results.json", "where to write the results as JSON; empty for nowhere")
	flag.IntVar(&cfg.genProcs, "gen-procs", 0, "GOMAXPROCS of the load generator; 0 leaves Go's default (all CPUs)")
	flag.IntVar(&cfg.caddyProcs, "caddy-procs", 0, "GOMAXPROCS of Caddy; 0 leaves Go's default (all CPUs)")
	flag.IntVar(&cfg.upProcs, "upstream-procs", 0, "GOMAXPROCS of the upstream; 0 leaves Go's default (all CPUs)")
	flag.BoolVar(&cfg.loginCheck, "login-check", true, "also sign in once through the portal's password form (a warning if it fails)")
	flag.BoolVar(&cfg.proxyLog, "proxy-log", true, "keep reverse_proxy in Caddy's default log; false excludes it on every site (log default { exclude http.handlers.reverse_proxy }), which spares the per-request encoding of every request header into its logger")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temporary directory (Caddyfile, Caddy's log, bbolt files)")
	flag.BoolVar(&cfg.serve, "serve", false, "set up and check the sites, print their addresses and a session cookie, then wait (until Ctrl-C or -timeout) instead of measuring: for profiling with wrk and Caddy's /debug/pprof")
	flag.BoolVar(&cfg.strict, "strict", false, "exit with status 1 when a target is missed")
	flag.DurationVar(&cfg.timeout, "timeout", 0, "hard limit for the whole run; 0 means 10m, or 45m with -sessions")
	flag.Float64Var(&cfg.noise, "noise", 10, "percent of the machine's CPU that other processes may use during a round before it is redone (and before one starts); 0 disables")
	flag.DurationVar(&cfg.noiseWait, "noise-wait", 10*time.Second, "longest wait before a round for other processes to go quiet")
	flag.IntVar(&cfg.noiseRetries, "noise-retries", 2, "how many times a noisy round is redone")
	flag.DurationVar(&cfg.noiseBudget, "noise-budget", time.Minute, "most time the whole run spends waiting for quiet and redoing rounds; then it measures whatever the machine does")
	flag.BoolVar(&cfg.quick, "quick", false, "smoke test in about 30 s: 2 short rounds per phase (flags given explicitly still win)")
	flag.Parse()

	if *upstreamServe != "" {
		if err := serveUpstream(*upstreamServe); err != nil {
			fmt.Fprintln(os.Stderr, "upstream:", err)
			os.Exit(1)
		}
		return
	}
	cfg.applyQuick()
	if cfg.genProcs > 0 {
		runtime.GOMAXPROCS(cfg.genProcs)
	}
	if cfg.timeout <= 0 {
		cfg.timeout = 10 * time.Minute
		if cfg.sessions != "" {
			cfg.timeout = 45 * time.Minute
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	var interrupted atomic.Bool
	go func() {
		s := <-sigs
		interrupted.Store(true)
		logf("%s: stopping (again to kill at once)", s)
		cancel()
		<-sigs
		children.stopAll()
		os.Exit(130)
	}()

	pass, err := run(ctx, cfg)
	cancel()
	children.stopAll()
	if err != nil {
		switch {
		case interrupted.Load():
			err = fmt.Errorf("interrupted (%w)", err)
		case errors.Is(err, context.DeadlineExceeded):
			err = fmt.Errorf("%w (the -timeout of %s)", err, cfg.timeout)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if !pass && cfg.strict {
		os.Exit(1)
	}
}

// applyQuick shortens everything not set explicitly.
func (cfg *config) applyQuick() {
	if !cfg.quick {
		return
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["rounds"] {
		cfg.rounds = 2
	}
	if !set["duration"] {
		cfg.duration = 2 * time.Second
	}
	if !set["open-rounds"] {
		cfg.openRounds = 2
	}
	if !set["mix-rounds"] {
		cfg.mixRounds = 1
	}
	if !set["open-duration"] {
		cfg.openDuration = 1500 * time.Millisecond
	}
	if !set["warmup"] {
		cfg.warmup = time.Second
	}
	if !set["noise-wait"] {
		cfg.noiseWait = 5 * time.Second
	}
	if !set["noise-retries"] {
		cfg.noiseRetries = 1
	}
	if !set["noise-budget"] {
		cfg.noiseBudget = 15 * time.Second
	}
}

// run does the whole benchmark; it reports whether every target passed.
func run(ctx context.Context, cfg config) (bool, error) {
	if err := toModuleRoot(&cfg); err != nil {
		return false, err
	}
	bin, err := filepath.Abs(cfg.caddy) // Caddy runs in its own directory
	if err != nil {
		return false, err
	}
	cfg.caddy = bin
	sites, err := parseSites(cfg.sites, cfg.require)
	if err != nil {
		return false, err
	}
	counts, err := parseCounts(cfg.sessions)
	if err != nil {
		return false, err
	}
	if len(sites) == 0 && len(counts) == 0 {
		return false, errors.New("nothing to do: -sites is empty and -sessions is not set")
	}
	if cfg.rounds == 0 && (cfg.openRounds > 0 || (cfg.mixRounds > 0 && len(sites) > 1)) && cfg.rate <= 0 && len(sites) > 0 {
		// The default rate is a fraction of the saturation throughput,
		// which is not measured then.
		return false, errors.New("-rounds 0 needs -rate: the default open-loop rate comes from the saturation phase")
	}
	if cfg.serve && len(sites) == 0 {
		return false, errors.New("-serve serves -sites, and -sites is empty")
	}
	if cfg.conns < 1 || cfg.conns > 1024 || cfg.duration <= 0 || cfg.openDuration <= 0 || cfg.rounds < 0 || cfg.openRounds < 0 || cfg.mixRounds < 0 {
		return false, errors.New("-conns must be 1 to 1024, durations positive, rounds not negative")
	}
	needSigra := len(counts) > 0 || caddyConf{Sites: sites}.needsSigra()
	version, err := checkCaddy(cfg.caddy, needSigra)
	if err != nil {
		return false, err
	}
	if f := staleSource(cfg.caddy); f != "" && needSigra {
		logf("warning: %s is newer than %s: run make caddy to measure the current code", f, cfg.caddy)
	}

	tmp, err := os.MkdirTemp("", "sigra-bench-")
	if err != nil {
		return false, err
	}
	if cfg.keep {
		logf("keeping %s", tmp)
	} else {
		remove := func() { os.RemoveAll(tmp) }
		children.add(remove) // stopped last: on a second signal too
		defer remove()
	}

	begin := time.Now()
	r := &results{
		StartedAt: begin.UTC(),
		Host:      hostInformation(version, cfg.caddyProcs),
		Settings:  map[string]any{},
	}
	flag.VisitAll(func(f *flag.Flag) {
		if f.Name != "upstream-serve" {
			r.Settings[f.Name] = f.Value.String()
		}
	})
	if !cfg.proxyLog {
		r.Notes = append(r.Notes, "-proxy-log=false: reverse_proxy is out of Caddy's default log on every site, A's included")
	}

	up, err := startUpstream(ctx, cfg.upProcs)
	if err != nil {
		return false, err
	}
	defer up.stop()
	logf("upstream on %s (pid %s)", up.Addr, up.PID)

	b := &bench{cfg: cfg, up: up, res: r}
	if len(sites) > 0 {
		if err := b.mainPhases(ctx, filepath.Join(tmp, "main"), sites); err != nil {
			return false, err
		}
		if cfg.serve {
			return true, nil
		}
	}
	if len(counts) > 0 {
		if err := b.sessionsPhase(ctx, filepath.Join(tmp, "sessions"), counts); err != nil {
			return false, err
		}
	}
	r.Seconds = time.Since(begin).Seconds()
	r.Goals = evaluate(r)
	printReport(os.Stdout, r, cfg.conns)
	if cfg.jsonPath != "" {
		if err := writeJSON(cfg.jsonPath, r); err != nil {
			return false, err
		}
		logf("wrote %s (%.0f s in all)", cfg.jsonPath, r.Seconds)
	}
	pass := true
	for _, g := range r.Goals {
		pass = pass && g.Pass
	}
	return pass, nil
}

// parseSites turns "-sites A,B,C" into site blocks, A first.
func parseSites(list, require string) ([]siteConf, error) {
	want := map[string]bool{}
	for _, f := range strings.Split(list, ",") {
		f = strings.ToUpper(strings.TrimSpace(f))
		switch f {
		case "":
		case "A", "B", "C", "H", "A2":
			want[f] = true
		default:
			return nil, fmt.Errorf("-sites: unknown site %q (A, B, C, H or A2)", f)
		}
	}
	var req []string
	for _, r := range strings.Split(require, ";") {
		if r = strings.TrimSpace(r); r != "" {
			req = append(req, r)
		}
	}
	if want["C"] && len(req) == 0 {
		return nil, errors.New("-require: site C needs at least one requirement (or it is site B)")
	}
	var sites []siteConf
	for _, s := range []siteConf{{Name: "A"}, {Name: "B", Gate: true}, {Name: "C", Gate: true, Require: req}, {Name: "H", HeaderUp: identityLikeHeaders}, {Name: "A2"}} {
		if want[s.Name] {
			sites = append(sites, s)
		}
	}
	return sites, nil
}

func describe(s siteConf) string {
	switch {
	case s.Desc != "":
		return s.Desc
	case s.Name == "A2":
		return "reverse_proxy (A again)"
	case len(s.HeaderUp) > 0:
		return "reverse_proxy + identity headers"
	case !s.Gate:
		return "reverse_proxy"
	case len(s.Require) == 0:
		return "gate"
	default:
		return "gate {" + strings.Join(s.Require, "; ") + "}"
	}
}

// parseCounts parses "-sessions 1000,100000,1000000", smallest first
// (the goal compares the largest store with the smallest) and each count
// once (each has its own store directory).
func parseCounts(list string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(strings.ReplaceAll(f, "_", ""))
		if err != nil || n < 1 || n > 20_000_000 {
			return nil, fmt.Errorf("-sessions: %q is not a count from 1 to 20000000", f)
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// humanCount writes 1000 as 1k and 1000000 as 1M.
func humanCount(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}

// toModuleRoot changes to the repository root (where ./caddy is built)
// when run from below it, keeping explicitly given paths as they were meant.
func toModuleRoot(cfg *config) error {
	if _, err := os.Stat("go.mod"); err == nil {
		return nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	for dir := wd; ; {
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil // not in the module: leave paths alone
		}
		dir = parent
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			set := map[string]bool{}
			flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
			if set["caddy"] && !filepath.IsAbs(cfg.caddy) {
				cfg.caddy = filepath.Join(wd, cfg.caddy)
			}
			if set["json"] && cfg.jsonPath != "" && !filepath.IsAbs(cfg.jsonPath) {
				cfg.jsonPath = filepath.Join(wd, cfg.jsonPath)
			}
			return os.Chdir(dir)
		}
	}
}

func hostInformation(caddyVersion string, caddyProcs int) hostInfo {
	h := hostInfo{
		CPUs:       runtime.NumCPU(),
		GoVersion:  runtime.Version(),
		GenProcs:   runtime.GOMAXPROCS(0),
		CaddyProcs: caddyProcs,
		Caddy:      strings.Fields(caddyVersion + " ?")[0],
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for l := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return h
}

// childSet remembers how to stop every child process (and remove the
// temporary directory), so that an error, a timeout or a signal never
// leaves one behind.
type childSet struct {
	mu    sync.Mutex
	stops []func()
}

var children childSet

func (c *childSet) add(stop func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stops = append(c.stops, stop)
}

// stopAll stops the children, newest first. Each stop is idempotent.
func (c *childSet) stopAll() {
	c.mu.Lock()
	stops := c.stops
	c.stops = nil
	c.mu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
}

// logf reports progress on stderr; stdout carries only the report.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
