package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sigra-auth/caddy-sigra/internal/freeport"
)

// The phases: the main one (A, B and C in one Caddy, saturation then
// moderate load) and the sessions one; rounds and how each is measured.

// bench holds what the phases share.
type bench struct {
	cfg config
	up  *upstreamProc
	gen generator
	res *results
	// noiseSpent is the time spent so far waiting for quiet and on
	// rounds that were redone; it is bounded by -noise-budget.
	noiseSpent time.Duration
}

// samePID is n copies of pid: every site served by one Caddy.
func samePID(pid string, n int) []string {
	pids := make([]string, n)
	for i := range pids {
		pids[i] = pid
	}
	return pids
}

// mainPhases runs A, B, C in one Caddy: saturation, then moderate load.
func (b *bench) mainPhases(ctx context.Context, dir string, sites []siteConf) error {
	ports, err := freeport.Take(len(sites) + 1)
	if err != nil {
		return err
	}
	conf := caddyConf{AdminPort: ports[0], DBPath: filepath.Join(dir, "sigra.db"), Upstream: b.up.Addr, NoProxyLog: !b.cfg.proxyLog}
	for i := range sites {
		sites[i].Port = ports[i+1]
	}
	conf.Sites = sites

	// Every site gets the very same requests, cookie included.
	seed := &seeded{}
	tokens := oneToken("no-session-without-a-gated-site")
	if conf.needsSigra() {
		logf("seeding %s", conf.DBPath)
		if seed, err = seedStore(ctx, conf.DBPath, 1, true); err != nil {
			return err
		}
		tokens = seed.Tokens
	}
	b.res.Caddyfile = conf.caddyfile()
	caddy, err := b.startCaddy(ctx, dir, conf)
	if err != nil {
		return err
	}
	defer caddy.stop()

	for _, s := range sites {
		if err := checkSite(ctx, s, string(tokens.At(0)), seed); err != nil {
			return fmt.Errorf("check before measuring: %w", err)
		}
	}
	logf("checked: A passes everything; gated sites inject the seeded user, refuse no session, enforce their requirements")
	if b.cfg.loginCheck && seed.Password != "" {
		for _, s := range sites {
			if s.Gate && len(s.Require) == 0 {
				if err := checkLogin(ctx, s.Port, seed); err != nil {
					note := fmt.Sprintf("portal password login on site %s did not work: %v", s.Name, err)
					logf("warning: %s", note)
					b.res.Notes = append(b.res.Notes, note)
				} else {
					logf("checked: a password login through the portal of site %s works", s.Name)
				}
				break
			}
		}
	}

	targets := make([]target, len(sites))
	for i, s := range sites {
		targets[i] = target{Name: s.Name, Addr: fmt.Sprintf("127.0.0.1:%d", s.Port), Path: "/", Tokens: tokens}
	}
	if b.cfg.serve {
		serveUntilDone(ctx, caddy, sites, string(tokens.At(0)))
		return nil
	}
	if err := b.warm(ctx, targets); err != nil {
		return err
	}

	if b.cfg.rounds > 0 {
		spec := roundSpec{Conns: b.cfg.conns, Duration: b.cfg.duration}
		accs, err := b.rounds(ctx, "closed", samePID(caddy.PID, len(sites)), sites, targets, spec, b.cfg.rounds)
		if err != nil {
			return err
		}
		b.res.Closed, b.res.ClosedRatios = phaseResults(accs)
	}
	rate := b.cfg.rate
	if rate <= 0 { // run refuses -rounds 0 without -rate
		slowest := math.Inf(1)
		for _, s := range b.res.Closed {
			slowest = min(slowest, s.RPS)
		}
		rate = max(100, math.Floor(slowest*b.cfg.rateFraction/100)*100)
	}
	spec := roundSpec{Conns: b.cfg.conns, Duration: b.cfg.openDuration, Rate: rate}
	if b.cfg.openRounds > 0 {
		b.res.OpenRate = rate
		var before gateHist
		if conf.needsSigra() {
			if before, err = scrapeGateHist(ctx, caddy.admin); err != nil {
				return fmt.Errorf("reading the gate's own latency: %w", err)
			}
		}
		accs, err := b.rounds(ctx, "open", samePID(caddy.PID, len(sites)), sites, targets, spec, b.cfg.openRounds)
		if err != nil {
			return err
		}
		b.res.Open, b.res.OpenRatios = phaseResults(accs)
		if conf.needsSigra() {
			after, err := scrapeGateHist(ctx, caddy.admin)
			if err != nil {
				return fmt.Errorf("reading the gate's own latency: %w", err)
			}
			g, err := after.since(before)
			if err != nil {
				return err
			}
			b.res.OpenGate = &g
		}
		for _, s := range b.res.Open {
			if s.LatePct > 1 {
				b.res.Notes = append(b.res.Notes, fmt.Sprintf("open loop: %.1f%% of site %s's requests were sent late: %s req/s is not a moderate load for it (lower -rate)", s.LatePct, s.Site, num(rate, 0)))
			}
		}
	}
	if b.cfg.mixRounds > 0 && len(sites) > 1 {
		b.res.MixedRate = rate
		accs, err := b.mixedRounds(ctx, "mixed", caddy.PID, sites, targets, spec, b.cfg.mixRounds)
		if err != nil {
			return err
		}
		b.res.Mixed, b.res.MixedRatios = phaseResults(accs)
	}
	return nil
}

// sessionsPhase measures site B with each number of sessions in its
// store. Each count has its own bbolt file and so its own Caddy; all run
// at once and their rounds are interleaved like A, B and C.
func (b *bench) sessionsPhase(ctx context.Context, dir string, counts []int) error {
	var (
		sites   []siteConf
		targets []target
		pids    []string
	)
	for _, n := range counts {
		sub := filepath.Join(dir, strconv.Itoa(n))
		ports, err := freeport.Take(2)
		if err != nil {
			return err
		}
		s := siteConf{Name: humanCount(n), Port: ports[1], Gate: true}
		conf := caddyConf{AdminPort: ports[0], DBPath: filepath.Join(sub, "sigra.db"), Upstream: b.up.Addr, Sites: []siteConf{s}, NoProxyLog: !b.cfg.proxyLog}
		logf("seeding %d sessions into %s", n, conf.DBPath)
		seed, err := seedStore(ctx, conf.DBPath, n, false)
		if err != nil {
			return err
		}
		if fi, err := os.Stat(conf.DBPath); err == nil {
			logf("seeded %d sessions in %s (%.0f MB)", n, seed.Took.Round(time.Millisecond), float64(fi.Size())/(1<<20))
		}
		caddy, err := b.startCaddy(ctx, sub, conf)
		if err != nil {
			return err
		}
		defer caddy.stop()
		if err := checkSite(ctx, s, string(seed.Tokens.At(seed.Tokens.Len()-1)), seed); err != nil {
			return fmt.Errorf("check before measuring: %w", err)
		}
		sites = append(sites, s)
		// A fixed set of active sessions, the same size whatever the store
		// holds: the question is whether stored sessions cost the active
		// ones anything. (-active 0 makes every request a cold session.)
		tokens := seed.Tokens.Head(b.cfg.active)
		targets = append(targets, target{Name: s.Name, Addr: fmt.Sprintf("127.0.0.1:%d", s.Port), Path: "/", Tokens: tokens})
		pids = append(pids, caddy.PID)
	}
	if err := b.warm(ctx, targets); err != nil {
		return err
	}
	for i := range sites {
		sites[i].Desc = fmt.Sprintf("gate, %d of %d stored sessions active", min(b.cfg.active, counts[i]), counts[i])
		if b.cfg.active <= 0 {
			sites[i].Desc = "gate, every stored session active"
		}
	}
	// Besides each round's own CPU, the whole phase's: a Caddy keeps
	// working between its rounds (the LastSeen write-back, the prune of
	// expired sessions), and that work may grow with the store.
	before := make([]cpuTime, len(pids))
	for i, pid := range pids {
		c, err := readCPU(pid)
		if err != nil {
			return err
		}
		before[i] = c
	}
	spec := roundSpec{Conns: b.cfg.conns, Duration: b.cfg.duration}
	accs, err := b.rounds(ctx, "sessions", pids, sites, targets, spec, max(b.cfg.rounds, 1))
	if err != nil {
		return err
	}
	var whole []string
	for i, pid := range pids {
		after, err := readCPU(pid)
		if err != nil {
			return err
		}
		whole = append(whole, fmt.Sprintf("%s %.1f", sites[i].Name, float64(after.Sub(before[i]).Total().Microseconds())/float64(max(accs[i].requests, 1))))
	}
	b.res.Notes = append(b.res.Notes, "sessions: Caddy CPU µs per request over the whole phase, work between its rounds included: "+strings.Join(whole, ", "))
	b.res.Sessions, b.res.SessionsRatios = phaseResults(accs)
	return nil
}

// startCaddy starts a Caddy on conf and waits until it serves.
func (b *bench) startCaddy(ctx context.Context, dir string, conf caddyConf) (*caddyProc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p, err := startCaddy(b.cfg.caddy, dir, conf, b.cfg.caddyProcs)
	if err != nil {
		return nil, err
	}
	if err := p.waitReady(ctx, 60*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	logf("caddy pid %s ready (admin 127.0.0.1:%d, log %s)", p.PID, conf.AdminPort, p.logPath)
	return p, nil
}

// warm loads every target once, unmeasured, so that connection pools,
// caches and the Go runtimes are in their steady state.
func (b *bench) warm(ctx context.Context, targets []target) error {
	if b.cfg.warmup <= 0 {
		return nil
	}
	for _, t := range targets {
		if _, err := b.gen.run(ctx, []target{t}, roundSpec{Conns: b.cfg.conns, Duration: b.cfg.warmup}, hooks{}); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	return nil
}

// rounds runs n rounds of every site; pids[i] is the Caddy serving
// sites[i]. The order within each round follows roundOrder, so that over
// a cycle every site runs right after every other one equally often and
// in every position equally often: drift between rounds reaches all sites
// alike.
func (b *bench) rounds(ctx context.Context, phase string, pids []string, sites []siteConf, targets []target, spec roundSpec, n int) ([]*siteAcc, error) {
	accs := newAccs(sites)
	if c := orderCycle(len(sites)); n%c != 0 {
		logf("%s: %d rounds are not a whole number of order cycles (%d for %d sites): some sites follow others more often", phase, n, c, len(sites))
	}
	for round := range n {
		for _, i := range roundOrder(len(sites), round) {
			if err := b.measure(ctx, phase, round, pids[i], targets[i:i+1], spec, accs[i:i+1]); err != nil {
				return nil, err
			}
		}
	}
	return accs, nil
}

// mixedRounds runs n open-loop rounds in which all the sites of one
// Caddy (pid) take turns request by request (generator.run), so that
// each round measures them all in the same moments: a stall of the
// machine lands on every site alike instead of on whichever site had the
// round. The load is then the sites' average, the same for all of them:
// what one site's requests gain over another's is their own latency,
// without the queueing that a site's extra CPU adds when all the load is
// its own (which the rounds of the open phase include). spec.Rate is the
// load Caddy sees; a round lasts spec.Duration per site, so every site
// gets as many requests as in a round of its own. Caddy's CPU and RSS
// are the round's, shared by the sites.
func (b *bench) mixedRounds(ctx context.Context, phase, pid string, sites []siteConf, targets []target, spec roundSpec, n int) ([]*siteAcc, error) {
	accs := newAccs(sites)
	spec.Duration *= time.Duration(len(sites))
	for round := range n {
		if err := b.measure(ctx, phase, round, pid, targets, spec, accs); err != nil {
			return nil, err
		}
	}
	return accs, nil
}

func newAccs(sites []siteConf) []*siteAcc {
	accs := make([]*siteAcc, len(sites))
	for i, s := range sites {
		accs[i] = &siteAcc{site: s.Name, desc: describe(s)}
	}
	return accs
}

// orderCycle is how many rounds roundOrder takes to come back to its
// first order: n for an even number of sites, 2n for an odd one.
func orderCycle(n int) int {
	if n%2 == 1 {
		return 2 * n
	}
	return n
}

// roundOrder is the order of n sites in round r: the rows of a Williams
// design, a Latin square balanced for the site just before (0, 1, n−1, 2,
// n−2, … shifted by the row; for odd n each row is followed by its
// reverse).
func roundOrder(n, r int) []int {
	if n <= 0 {
		return nil
	}
	k := r % orderCycle(n)
	row := make([]int, n)
	lo, hi := 1, n-1
	for j := 1; j < n; j++ {
		if j%2 == 1 {
			row[j] = lo
			lo++
		} else {
			row[j] = hi
			hi--
		}
	}
	for j := range row {
		row[j] = (row[j] + k) % n
	}
	if k >= n {
		slices.Reverse(row)
	}
	return row
}

// measure runs one round of ts (one target, or several sharing the
// round) and adds each one's result to its acc. On a shared machine it
// first waits (boundedly) until other processes leave the CPUs alone, and
// redoes a round during which they did not (at most -noise-retries times).
func (b *bench) measure(ctx context.Context, phase string, round int, pid string, ts []target, spec roundSpec, accs []*siteAcc) error {
	for attempt := 0; ; attempt++ {
		if err := b.waitQuiet(ctx, pid); err != nil {
			return err
		}
		begin := time.Now()
		recs, res, cpu, err := b.measureOnce(ctx, phase, round, pid, ts, spec)
		if err != nil {
			return err
		}
		noisy := b.cfg.noise > 0 && recs[0].Noise() > b.cfg.noise
		if noisy && attempt < b.cfg.noiseRetries && b.noiseSpent < b.cfg.noiseBudget {
			b.noiseSpent += time.Since(begin)
			logf("%-8s round %d  %-4s other processes or the hypervisor took %.0f%% of the CPUs: redoing the round", phase, round+1, roundName(ts), recs[0].Noise())
			continue
		}
		if noisy && !b.res.hasNote(noteNoise) {
			b.res.Notes = append(b.res.Notes, noteNoise)
		}
		all := 0
		for _, r := range res {
			all += r.Requests
		}
		for i, acc := range accs {
			// Targets that shared the round share its CPU by their
			// requests, so that each one's CPU per request is the round's.
			var part [3]time.Duration
			for j, c := range cpu {
				part[j] = time.Duration(float64(c) * float64(res[i].Requests) / float64(max(all, 1)))
			}
			acc.add(recs[i], res[i], part)
			b.res.Rounds = append(b.res.Rounds, recs[i])
		}
		return nil
	}
}

// roundName names the target of a round, or its targets.
func roundName(ts []target) string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.Name
	}
	return strings.Join(names, "+")
}

// waitQuiet pauses briefly between rounds (closed connections drain,
// timers settle) and then, for at most -noise-wait, until the CPU taken by
// processes other than ours and by the hypervisor (steal) stays under
// -noise percent.
func (b *bench) waitQuiet(ctx context.Context, pid string) error {
	sleep := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	if err := sleep(200 * time.Millisecond); err != nil {
		return err
	}
	if b.cfg.noise <= 0 || b.cfg.noiseWait <= 0 || b.noiseSpent >= b.cfg.noiseBudget {
		return nil
	}
	begin := time.Now()
	defer func() { b.noiseSpent += time.Since(begin) }()
	ours := func() time.Duration {
		var sum time.Duration
		for _, p := range []string{pid, "self", b.up.PID} {
			if c, err := readCPU(p); err == nil {
				sum += c.Total()
			}
		}
		return sum
	}
	const window = 250 * time.Millisecond
	deadline := time.Now().Add(min(b.cfg.noiseWait, b.cfg.noiseBudget-b.noiseSpent))
	for waited := false; ; waited = true {
		s0, err := readSystemCPU()
		if err != nil {
			return nil // no /proc/stat: nothing to wait for
		}
		o0 := ours()
		if err := sleep(window); err != nil {
			return err
		}
		s1, err := readSystemCPU()
		if err != nil {
			return nil
		}
		notOurs := s1.Busy - s0.Busy - (ours() - o0) + s1.Steal - s0.Steal
		other := 100 * notOurs.Seconds() / (window.Seconds() * float64(runtime.NumCPU()))
		if other <= b.cfg.noise {
			return nil
		}
		if time.Now().After(deadline) {
			logf("other processes or the hypervisor still take %.0f%% of the CPUs: measuring anyway", other)
			return nil
		}
		if !waited {
			logf("other processes or the hypervisor take %.0f%% of the CPUs: waiting up to %s for a quieter moment", other, b.cfg.noiseWait)
		}
	}
}

// measureOnce runs one round and reads Caddy's, the generator's and the
// upstream's CPU around it, the machine's, and Caddy's peak RSS during it.
// It returns a record and a result per target; when targets share the
// round, the CPU, RSS and noise figures are the round's, in every record.
func (b *bench) measureOnce(ctx context.Context, phase string, round int, pid string, ts []target, spec roundSpec) ([]roundRecord, []roundResult, [3]time.Duration, error) {
	var none [3]time.Duration
	peakReset := resetPeakRSS(pid) == nil
	var c0, c1, g0, g1, u0, u1 cpuTime
	var s0, s1 systemCPU
	var cpuErr error
	read := func(c, g, u *cpuTime, s *systemCPU) {
		var errs [4]error
		*c, errs[0] = readCPU(pid)
		*g, errs[1] = readCPU("self")
		*u, errs[2] = readCPU(b.up.PID)
		*s, errs[3] = readSystemCPU()
		if err := errors.Join(errs[:]...); err != nil && cpuErr == nil {
			cpuErr = err
		}
	}
	res, err := b.gen.run(ctx, ts, spec, hooks{
		Start: func() { read(&c0, &g0, &u0, &s0) },
		End:   func() { read(&c1, &g1, &u1, &s1) },
	})
	if err != nil {
		return nil, nil, none, fmt.Errorf("%s round %d: %w", phase, round+1, err)
	}
	if cpuErr != nil {
		return nil, nil, none, fmt.Errorf("%s round %d: reading CPU time: %w", phase, round+1, cpuErr)
	}
	mem, err := readMemory(pid)
	if err != nil {
		return nil, nil, none, fmt.Errorf("%s round %d: reading memory: %w", phase, round+1, err)
	}
	if !peakReset && !b.res.hasNote(notePeak) {
		b.res.Notes = append(b.res.Notes, notePeak)
	}
	caddyCPU, genCPU, upCPU := c1.Sub(c0).Total(), g1.Sub(g0).Total(), u1.Sub(u0).Total()
	all := 0
	for _, r := range res {
		all += r.Requests
	}
	n := float64(max(all, 1))
	var otherPct, stealPct float64
	if capacity := float64(runtime.NumCPU()) * res[0].Elapsed.Seconds(); capacity > 0 {
		other := s1.Busy - s0.Busy - caddyCPU - genCPU - upCPU
		otherPct = max(0, 100*other.Seconds()/capacity)
		stealPct = 100 * (s1.Steal - s0.Steal).Seconds() / capacity
	}
	recs := make([]roundRecord, len(ts))
	for i, t := range ts {
		r := res[i]
		sorted := append([]uint32(nil), r.Samples...)
		slices.Sort(sorted)
		recs[i] = roundRecord{
			Phase:        phase,
			Site:         t.Name,
			Round:        round + 1,
			Requests:     r.Requests,
			Seconds:      r.Elapsed.Seconds(),
			RPS:          float64(r.Requests) / r.Elapsed.Seconds(),
			P50ms:        ms(percentile(sorted, 50)),
			P99ms:        ms(percentile(sorted, 99)),
			CaddyCPUus:   float64(caddyCPU.Microseconds()) / n,
			GenCPUus:     float64(genCPU.Microseconds()) / n,
			UpstreamCPUs: float64(upCPU.Microseconds()) / n,
			PeakRSSMB:    float64(mem.Peak) / (1 << 20),
			Late:         r.Late,
			OtherCPUPct:  otherPct,
			StealPct:     stealPct,
			Shared:       len(ts) > 1,
		}
		rec := recs[i]
		logf("%-8s round %d  %-4s %7.0f req/s  p50 %.3f ms  p99 %.3f ms  caddy %5.1f µs/req  rss %.0f MB  other procs %.0f%%  steal %.0f%%",
			phase, round+1, t.Name, rec.RPS, rec.P50ms, rec.P99ms, rec.CaddyCPUus, rec.PeakRSSMB, rec.OtherCPUPct, rec.StealPct)
	}
	return recs, res, [3]time.Duration{caddyCPU, genCPU, upCPU}, nil
}

const noteNoise = "other processes or the hypervisor took more than -noise percent of the CPUs during some rounds (column noise %), even after redoing them: the numbers are noisy; rerun on a quiet machine"

const notePeak = "peak RSS could not be reset between rounds (/proc/<pid>/clear_refs): it is the peak since Caddy started"

func (r *results) hasNote(n string) bool {
	for _, x := range r.Notes {
		if x == n {
			return true
		}
	}
	return false
}

// serveUntilDone is -serve: it prints what a profiling session needs and
// waits until the run is interrupted or times out.
func serveUntilDone(ctx context.Context, caddy *caddyProc, sites []siteConf, cookie string) {
	fmt.Printf("Caddy pid %s; CPU profile: curl -o cpu.pb 'http://%s/debug/pprof/profile?seconds=15'\n", caddy.PID, caddy.admin)
	for _, s := range sites {
		fmt.Printf("site %-2s %-34s http://127.0.0.1:%d/\n", s.Name, describe(s), s.Port)
	}
	fmt.Printf("load, the request the harness sends: wrk -c 16 -t 1 -d 16s -H 'Cookie: sigra_session=%s' -H 'Accept: application/json' http://127.0.0.1:%d/\n", cookie, sites[0].Port)
	fmt.Println("serving until Ctrl-C or -timeout")
	<-ctx.Done()
}
