package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The gate measures its own time per request into the Prometheus
// histogram sigra_gate_duration_seconds (on Caddy's admin /metrics). The
// harness reads it before and after a phase: the difference is what the
// gates of that phase (B and C) added inside Caddy, apart from carrying
// the headers and apart from the machine's noise that the end-to-end
// percentiles include.

const gateHistName = "sigra_gate_duration_seconds"

// gateHist is the histogram as scraped: cumulative counts per upper bound
// (seconds, ascending, +Inf last), and the sum of the observations.
type gateHist struct {
	Bounds []float64
	Counts []float64
	Sum    float64
}

// gateLatency is a phase's difference of two scrapes, for the report.
type gateLatency struct {
	Decisions float64 `json:"decisions"`
	MeanUs    float64 `json:"mean_us"`
	P50MaxUs  float64 `json:"p50_at_most_us"` // upper bound of the bucket holding the median
	P99MaxUs  float64 `json:"p99_at_most_us"`
}

// scrapeGateHist reads the histogram from Caddy's admin endpoint.
func scrapeGateHist(ctx context.Context, admin string) (gateHist, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return gateHist{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return gateHist{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return gateHist{}, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseGateHist(resp.Body)
}

// parseGateHist finds the histogram in Prometheus text exposition.
func parseGateHist(r io.Reader) (gateHist, error) {
	var h gateHist
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, gateHistName+`_bucket{le="`):
			rest := strings.TrimPrefix(line, gateHistName+`_bucket{le="`)
			le, val, ok := strings.Cut(rest, `"} `)
			if !ok {
				return gateHist{}, fmt.Errorf("unreadable bucket line %q", line)
			}
			bound, err1 := strconv.ParseFloat(le, 64)
			count, err2 := strconv.ParseFloat(strings.TrimSpace(val), 64)
			if err1 != nil || err2 != nil {
				return gateHist{}, fmt.Errorf("unreadable bucket line %q", line)
			}
			if n := len(h.Bounds); n > 0 && bound <= h.Bounds[n-1] {
				return gateHist{}, fmt.Errorf("buckets out of order at %q", line)
			}
			h.Bounds = append(h.Bounds, bound)
			h.Counts = append(h.Counts, count)
		case strings.HasPrefix(line, gateHistName+"_sum "):
			v, err := strconv.ParseFloat(strings.TrimPrefix(line, gateHistName+"_sum "), 64)
			if err != nil {
				return gateHist{}, fmt.Errorf("unreadable sum line %q", line)
			}
			h.Sum = v
		}
	}
	if err := sc.Err(); err != nil {
		return gateHist{}, err
	}
	if len(h.Bounds) == 0 || !math.IsInf(h.Bounds[len(h.Bounds)-1], 1) {
		return gateHist{}, fmt.Errorf("no %s histogram in /metrics", gateHistName)
	}
	return h, nil
}

// since is the phase between an earlier scrape and this one.
func (h gateHist) since(before gateHist) (gateLatency, error) {
	if len(before.Bounds) != len(h.Bounds) {
		return gateLatency{}, fmt.Errorf("the %s buckets changed between scrapes", gateHistName)
	}
	d := make([]float64, len(h.Counts))
	for i := range d {
		if h.Bounds[i] != before.Bounds[i] {
			return gateLatency{}, fmt.Errorf("the %s buckets changed between scrapes", gateHistName)
		}
		d[i] = h.Counts[i] - before.Counts[i]
	}
	n := d[len(d)-1]
	g := gateLatency{Decisions: n}
	if n <= 0 {
		return g, nil
	}
	g.MeanUs = (h.Sum - before.Sum) / n * 1e6
	at := func(q float64) float64 {
		for i, c := range d {
			if c >= q*n {
				return h.Bounds[i] * 1e6
			}
		}
		return math.Inf(1)
	}
	g.P50MaxUs, g.P99MaxUs = at(0.50), at(0.99)
	return g, nil
}
