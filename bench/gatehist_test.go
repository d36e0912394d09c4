package main

import (
	"math"
	"strings"
	"testing"
)

const metricsBefore = `# HELP sigra_gate_duration_seconds Time the gate spends deciding a request (excluding the upstream).
# TYPE sigra_gate_duration_seconds histogram
sigra_gate_duration_seconds_bucket{le="1e-06"} 0
sigra_gate_duration_seconds_bucket{le="5e-06"} 10
sigra_gate_duration_seconds_bucket{le="1e-05"} 10
sigra_gate_duration_seconds_bucket{le="0.0001"} 10
sigra_gate_duration_seconds_bucket{le="+Inf"} 10
sigra_gate_duration_seconds_sum 3e-05
sigra_gate_duration_seconds_count 10
sigra_sessions_active 3
`

// 1000 more: 900 up to 5 µs, 95 more up to 10 µs, 5 up to 100 µs.
const metricsAfter = `sigra_gate_duration_seconds_bucket{le="1e-06"} 0
sigra_gate_duration_seconds_bucket{le="5e-06"} 910
sigra_gate_duration_seconds_bucket{le="1e-05"} 1005
sigra_gate_duration_seconds_bucket{le="0.0001"} 1010
sigra_gate_duration_seconds_bucket{le="+Inf"} 1010
sigra_gate_duration_seconds_sum 0.00403
sigra_gate_duration_seconds_count 1010
`

func TestGateHist(t *testing.T) {
	before, err := parseGateHist(strings.NewReader(metricsBefore))
	if err != nil {
		t.Fatal(err)
	}
	after, err := parseGateHist(strings.NewReader(metricsAfter))
	if err != nil {
		t.Fatal(err)
	}
	g, err := after.since(before)
	if err != nil {
		t.Fatal(err)
	}
	if g.Decisions != 1000 || math.Abs(g.MeanUs-4) > 1e-9 || g.P50MaxUs != 5 || g.P99MaxUs != 10 {
		t.Errorf("got %+v; want 1000 decisions, mean 4 µs, p50 ≤ 5 µs, p99 ≤ 10 µs", g)
	}

	if _, err := parseGateHist(strings.NewReader("sigra_sessions_active 3\n")); err == nil {
		t.Error("no histogram: got no error")
	}
	if _, err := parseGateHist(strings.NewReader(`sigra_gate_duration_seconds_bucket{le="x"} 1` + "\n")); err == nil {
		t.Error("bad bound: got no error")
	}
	other, _ := parseGateHist(strings.NewReader(`sigra_gate_duration_seconds_bucket{le="+Inf"} 5` + "\n"))
	if _, err := after.since(other); err == nil {
		t.Error("different buckets: got no error")
	}
}
