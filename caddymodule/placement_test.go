package caddymodule

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// A portal or gate placed where it never sees the requests it is written
// for is refused at adapt, at its line, saying what comes first; the
// placements the README gives pass.
func TestAdaptPlacement(t *testing.T) {
	const global = "{\n\tsigra {\n\t\tstorage bbolt /tmp/never-opened.db\n\t}\n%s}\n"
	cases := []struct {
		name, order, site string
		wantErr           []string // all in the error; none: adapts
	}{
		{"default order", "", "\tsigra_portal\n\tsigra_gate\n\treverse_proxy 127.0.0.1:9\n", nil},
		{"gate ordered after reverse_proxy", "\torder sigra_gate after reverse_proxy\n",
			"\tsigra_portal\n\tsigra_gate\n\treverse_proxy 127.0.0.1:9\n",
			[]string{"Testfile:9", "order option runs reverse_proxy (line 10) before sigra_gate", "served to anyone"}},
		{"gate ordered last", "\torder sigra_gate last\n",
			"\tsigra_portal\n\tsigra_gate\n\trespond ok\n", []string{"Testfile:9", "runs respond (line 10) before sigra_gate"}},
		{"gate ordered after a handle that answers all", "\torder sigra_gate after handle_path\n",
			"\tsigra_portal\n\tsigra_gate\n\thandle {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n", []string{"runs handle (line 10) before sigra_gate"}},
		{"gate ordered after handle /api/* (meant public)", "\torder sigra_gate after handle_path\n",
			"\tsigra_portal\n\tsigra_gate\n\thandle /api/* {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\treverse_proxy 127.0.0.1:9\n", nil},
		{"gate ordered before respond, as for other auth plugins", "\torder sigra_gate before respond\n",
			"\tsigra_portal\n\tsigra_gate\n\treverse_proxy 127.0.0.1:9\n", nil},
		{"portal ordered last", "\torder sigra_portal last\n",
			"\tsigra_portal\n\tsigra_gate\n\trespond ok\n", []string{"Testfile:8", "before sigra_portal"}},
		{"gate ordered before the portal", "\torder sigra_gate first\n",
			"\tsigra_portal\n\tsigra_gate\n\trespond ok\n", []string{"Testfile:9", "runs sigra_gate before sigra_portal"}},
		{"an order line that keeps both early", "\torder sigra_gate before basic_auth\n\torder header first\n",
			"\tsigra_portal\n\tsigra_gate\n\theader X-A b\n\trespond ok\n", nil},
		{"order before respond, the gate in a route", "\torder sigra_gate before respond\n",
			"\tsigra_portal\n\troute {\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n", nil},
		{"order before respond, the gate in handle_path beside a handle", "\torder sigra_gate before respond\n",
			"\tsigra_portal\n\thandle_path /admin/* {\n\t\tsigra_gate {\n\t\t\tgroup admins\n\t\t}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\thandle {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n", nil},
		// A handle sorts its block as a site does.
		{"order last, the gate in a handle", "\torder sigra_gate last\n",
			"\tsigra_portal\n\thandle {\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n", []string{"Testfile:10", "reverse_proxy on line 11 runs before it (the global order option)"}},
		{"route, file_server pass_thru before the gate", "",
			"\troot * /srv/public\n\tsigra_portal\n\troute {\n\t\tfile_server {\n\t\t\tpass_thru\n\t\t}\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n", nil},
		{"route, written in order", "",
			"\troute {\n\t\tsigra_portal\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n", nil},
		{"route, proxy before the gate", "",
			"\troute {\n\t\tsigra_portal\n\t\treverse_proxy 127.0.0.1:9\n\t\tsigra_gate\n\t}\n",
			[]string{"Testfile:10", "reverse_proxy on line 9 comes first in this route block"}},
		{"route, gate before the portal", "",
			"\troute {\n\t\tsigra_gate\n\t\tsigra_portal\n\t\trespond ok\n\t}\n",
			[]string{"Testfile:8", "sigra_portal on line 9 comes after this gate"}},
		{"route, handle without a matcher before the gate", "",
			"\tsigra_portal\n\troute {\n\t\thandle {\n\t\t\treverse_proxy 127.0.0.1:9\n\t\t}\n\t\tsigra_gate\n\t}\n",
			[]string{"Testfile:12", "handle on line 9 comes first", "answers every request"}},
		{"route, a handle that only sets a header before the gate", "",
			"\troute {\n\t\tsigra_portal\n\t\thandle {\n\t\t\trequest_header X-Env prod\n\t\t}\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n", nil},
		{"route, a route that only rewrites before the gate", "",
			"\troute {\n\t\tsigra_portal\n\t\troute {\n\t\t\turi strip_prefix /app\n\t\t\theader -Server\n\t\t}\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n", nil},
		{"route, reverse_proxy * before the gate", "",
			"\tsigra_portal\n\troute {\n\t\treverse_proxy * 127.0.0.1:9\n\t\tsigra_gate\n\t}\n", []string{"reverse_proxy on line 9 comes first"}},
		{"route, file_server /* before the gate", "",
			"\tsigra_portal\n\troute {\n\t\tfile_server /* browse\n\t\tsigra_gate\n\t}\n", []string{"file_server on line 9 comes first"}},
		{"route, proxy before the handle holding the gate", "",
			"\tsigra_portal\n\troute {\n\t\treverse_proxy 127.0.0.1:9\n\t\thandle /admin/* {\n\t\t\tsigra_gate\n\t\t\trespond hi\n\t\t}\n\t}\n",
			[]string{"Testfile:11", "reverse_proxy on line 9 comes first", "Write sigra_gate before it"}},
		{"route, handle /api/* before the gate (meant public)", "",
			"\tsigra_portal\n\troute {\n\t\thandle /api/* {\n\t\t\treverse_proxy 127.0.0.1:9\n\t\t}\n\t\tsigra_gate\n\t}\n", nil},
		{"route, a respond with a block before the gate", "",
			"\troute {\n\t\tsigra_portal\n\t\t@get method GET\n\t\theader X-A b\n\t\tsigra_gate\n\t\trespond @get ok\n\t}\n", nil},
		{"handle blocks sort by the directive order", "",
			"\tsigra_portal\n\thandle /app/* {\n\t\treverse_proxy 127.0.0.1:9\n\t\tsigra_gate\n\t}\n", nil},
		{"portal in handle_path", "",
			"\thandle_path /app/* {\n\t\tsigra_portal\n\t\tsigra_gate\n\t\trespond hi\n\t}\n",
			[]string{"Testfile:8", "inside handle_path /app/* on line 7", "site's top level"}},
		{"portal in a route with a matcher", "",
			"\troute /app/* {\n\t\tsigra_portal\n\t\tsigra_gate\n\t\trespond hi\n\t}\n", []string{"inside route on line 7"}},
		{"portal in a nested block under a matcher", "",
			"\thandle /app/* {\n\t\troute {\n\t\t\tsigra_portal\n\t\t\tsigra_gate\n\t\t\trespond hi\n\t\t}\n\t}\n", []string{"Testfile:9", "inside handle on line 7"}},
		{"portal in a handle without a matcher", "",
			"\thandle {\n\t\tsigra_portal\n\t\tsigra_gate\n\t\trespond hi\n\t}\n", nil},
		{"portal in a handle with a matcher, in a route", "",
			"\troute {\n\t\thandle /app/* {\n\t\t\tsigra_portal\n\t\t\tsigra_gate\n\t\t}\n\t}\n", []string{"Testfile:9", "inside handle /app/* on line 8"}},
		{"gates with matchers beside the portal", "",
			"\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate\n\treverse_proxy /api/* 127.0.0.1:9\n\trespond ok\n", nil},
		{"route, abort and error with matchers before the gate", "",
			"\t@scanners path /wp-admin*\n\troute {\n\t\tabort @scanners\n\t\terror /private/* 403\n\t\tsigra_portal\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n", nil},
		{"route, an error before the gate", "",
			"\troute {\n\t\tsigra_portal\n\t\terror 404\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\thandle_errors {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n",
			[]string{"error on line"}},
		{"route, an abort before the gate", "",
			"\troute {\n\t\tsigra_portal\n\t\tabort\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n",
			[]string{"abort on line"}},
		{"route, a public health check before the gate", "",
			"\troute {\n\t\tsigra_portal\n\t\trespond /healthz 200\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n", nil},
		{"gate in handle_path", "",
			"\tsigra_portal\n\thandle_path /app/* {\n\t\tsigra_gate\n\t\trespond hi\n\t}\n", nil},
		// Caddy runs handle and handle_path before route, whatever the
		// order written: a bare handle beside them answers first.
		{"portal and gate in a route beside a bare handle", "",
			"\troute {\n\t\tsigra_portal\n\t\tsigra_gate\n\t}\n\thandle {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n",
			[]string{"Testfile:8", "sigra_portal: handle on line 11 runs before the route block on line 7 that holds it (Caddy's directive order) and answers every request"}},
		{"gate in a route beside a bare handle", "",
			"\tsigra_portal\n\troute {\n\t\tsigra_gate\n\t}\n\thandle {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n",
			[]string{"Testfile:9", "sigra_gate: handle on line 11 runs before the route block on line 8 that holds it"}},
		{"gate in a route with a matcher beside a bare handle_path", "",
			"\tsigra_portal\n\troute /app/* {\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\thandle_path {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n",
			[]string{"handle_path on line 12 runs before the route block on line 8"}},
		{"gate in a route after a public handle /api/*", "",
			"\tsigra_portal\n\thandle /api/* {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\troute {\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n", nil},
		{"gate in a handle after a handle /api/*", "",
			"\tsigra_portal\n\thandle {\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\thandle /api/* {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n", nil},
		{"two bare handles, the gate in the second", "",
			"\tsigra_portal\n\thandle {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\thandle {\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n",
			[]string{"handle on line 8 runs before the handle block on line 11"}},
		{"an order line that runs reverse_proxy before the gate's route", "\torder reverse_proxy before route\n",
			"\tsigra_portal\n\troute {\n\t\tsigra_gate\n\t}\n\treverse_proxy 127.0.0.1:9\n",
			[]string{"reverse_proxy on line 12 runs before the route block on line 9 that holds it (the global order option)"}},
		// The portal must see every request, also those another block
		// answers on a path of its own.
		{"portal in a route after a handle /healthz", "",
			"\thandle /healthz {\n\t\trespond ok\n\t}\n\troute {\n\t\tsigra_portal\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n",
			[]string{"Testfile:11", "sigra_portal: handle on line 7 runs before the route block on line 10 that holds it", "at the site's top level"}},
		{"portal in a bare handle beside handle @api", "",
			"\t@api path /api/*\n\thandle @api {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\thandle {\n\t\tsigra_portal\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n",
			[]string{"sigra_portal: handle on line 8 runs before the handle block on line 11"}},
		{"portal in a route after a redir", "",
			"\tredir /old /new\n\troute {\n\t\tsigra_portal\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n", nil},
		{"gate at the top level, portal in a route", "",
			"\tsigra_gate\n\troute {\n\t\tsigra_portal\n\t\treverse_proxy 127.0.0.1:9\n\t}\n",
			[]string{"Testfile:7", "sigra_gate: it runs before the route block on line 8 that holds sigra_portal"}},
		// Inside handle blocks, sorted as a site is, and route blocks
		// within them.
		{"gate before respond, a bare handle beside it in handle /app/*", "\torder sigra_gate before respond\n",
			"\tsigra_portal\n\thandle /app/* {\n\t\tsigra_gate\n\t\thandle {\n\t\t\treverse_proxy 127.0.0.1:9\n\t\t}\n\t}\n",
			[]string{"Testfile:10", "handle on line 11 runs before it (the global order option)"}},
		{"in a handle, a bare handle before the gate's route", "",
			"\tsigra_portal\n\thandle {\n\t\thandle {\n\t\t\treverse_proxy 127.0.0.1:9\n\t\t}\n\t\troute {\n\t\t\tsigra_gate\n\t\t}\n\t}\n",
			[]string{"handle on line 9 runs before the route block on line 12 that holds it (Caddy's directive order)"}},
		{"both in a handle, the gate ordered first", "\torder sigra_gate first\n",
			"\thandle {\n\t\tsigra_portal\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n",
			[]string{"Testfile:10", "sigra_gate: it runs before sigra_portal on line 9 (the global order option)"}},
		{"both in a handle, the portal ordered last", "\torder sigra_portal last\n",
			"\thandle {\n\t\tsigra_portal\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n",
			[]string{"Testfile:9", "sigra_portal: reverse_proxy on line 11 runs before it (the global order option)"}},
		{"portal ordered after a public handle /api/*", "\torder sigra_portal after handle_path\n\torder sigra_gate after sigra_portal\n",
			"\tsigra_portal\n\tsigra_gate\n\thandle /api/* {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\treverse_proxy 127.0.0.1:9\n",
			[]string{"Testfile:9", "sigra_portal: handle on line 11 runs before it (the global order option), so the portal never sees the requests handle answers"}},
		{"portal in a route after reverse_proxy /api/*", "",
			"\troute {\n\t\treverse_proxy /api/* 127.0.0.1:9\n\t\tsigra_portal\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n",
			[]string{"Testfile:9", "sigra_portal: reverse_proxy on line 8 runs before it (a route keeps the written order)"}},
		{"portal in a route in a handle, after handle /api/*", "",
			"\thandle {\n\t\troute {\n\t\t\thandle /api/* {\n\t\t\t\treverse_proxy 127.0.0.1:9\n\t\t\t}\n\t\t\tsigra_portal\n\t\t\tsigra_gate\n\t\t\treverse_proxy 127.0.0.1:9\n\t\t}\n\t}\n",
			[]string{"sigra_portal: handle on line 9 runs before it (a route keeps the written order)"}},
		// The gates match the path the client asked for: a rewrite after
		// them into a gated path is a way round.
		{"a rewrite into the gated path", "",
			"\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\trewrite /x/* /admin{uri}\n\treverse_proxy 127.0.0.1:9\n",
			[]string{"Testfile:8", "sigra_gate: rewrite on line 11 sends requests to /admin{http.request.uri} after this gate has looked at the path the client asked for"}},
		{"a rewrite within the gated path", "",
			"\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\trewrite /admin/old /admin/new\n\treverse_proxy 127.0.0.1:9\n", nil},
		{"a front controller's rewrite", "",
			"\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\trewrite * /index.php?{query}\n\treverse_proxy 127.0.0.1:9\n", nil},
		{"a uri replace into the gated path", "",
			"\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\turi replace /old/ /admin/\n\treverse_proxy 127.0.0.1:9\n",
			[]string{"Testfile:8", "sigra_gate: uri replace on line 11 sends requests to /admin/ after this gate"}},
		{"a uri replace within the gated path", "",
			"\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\turi replace /admin/old /admin/new\n\treverse_proxy 127.0.0.1:9\n", nil},
		{"a uri path_regexp into the gated path", "",
			"\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\turi path_regexp ^/x(.*) /admin$1\n\treverse_proxy 127.0.0.1:9\n",
			[]string{"uri path_regexp on line 11 sends requests to /admin$1"}},
		{"a try_files falling back into the gated path", "",
			"\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\ttry_files {path} /admin/index.php\n\treverse_proxy 127.0.0.1:9\n",
			[]string{"try_files on line 11 sends requests to /admin/index.php"}},
		{"a front controller's try_files", "",
			"\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\ttry_files {path} {path}/ /index.php?{query}\n\treverse_proxy 127.0.0.1:9\n", nil},
		{"a try_files inside the gated path", "",
			"\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\troute /admin/* {\n\t\ttry_files {path} /admin/index.php\n\t}\n\treverse_proxy 127.0.0.1:9\n", nil},
		{"a rewrite into the gated path, then the gate, in a route", "",
			"\tsigra_portal\n\troute {\n\t\trewrite /x/* /admin{uri}\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n", nil},
		{"the gate, then a rewrite into its path, in a route", "",
			"\tsigra_portal\n\troute {\n\t\tsigra_gate /admin/* {\n\t\t\tgroup admins\n\t\t}\n\t\trewrite /x /admin/x\n\t\treverse_proxy 127.0.0.1:9\n\t}\n",
			[]string{"rewrite on line 12 sends requests to /admin/x"}},
		{"a strip_prefix after a gate written for the stripped path", "",
			"\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\turi strip_prefix /app\n\treverse_proxy 127.0.0.1:9\n",
			[]string{"Testfile:8", "uri strip_prefix on line 11 strips /app after this gate, which sees /app/admin… where the app will see /admin…", "handle_path /app/*"}},
		// A request for /admin/x is not stripped, and reaches the app as
		// /app/admin/x does.
		{"a strip_prefix after a gate written for the path asked for", "",
			"\tsigra_portal\n\tsigra_gate /app/admin* {\n\t\tgroup admins\n\t}\n\turi strip_prefix /app\n\treverse_proxy 127.0.0.1:9\n",
			[]string{"Testfile:8", "uri strip_prefix on line 11 strips /app after this gate, so the app sees /admin… for a request to /app/admin…, which the gate covers, and for a request to /admin… itself, which it does not",
				"handle_path /app/*", "or gate /app/admin* as well as /admin*"}},
		{"a strip_prefix with its own matcher after a gate written for the path asked for", "",
			"\tsigra_portal\n\tsigra_gate /app/admin* {\n\t\tgroup admins\n\t}\n\turi /app/* strip_prefix /app\n\treverse_proxy 127.0.0.1:9\n",
			[]string{"Testfile:8", "for a request to /admin… itself, which it does not"}},
		{"a strip_prefix in a handle for the prefix", "",
			"\tsigra_portal\n\thandle /app/* {\n\t\tsigra_gate /app/admin* {\n\t\t\tgroup admins\n\t\t}\n\t\turi strip_prefix /app\n\t\treverse_proxy 127.0.0.1:9\n\t}\n", nil},
		{"a strip_prefix in a route for another path", "",
			"\tsigra_portal\n\troute {\n\t\thandle /a* {\n\t\t\tsigra_gate /app/admin* {\n\t\t\t\tgroup admins\n\t\t\t}\n\t\t\turi strip_prefix /app\n\t\t\treverse_proxy 127.0.0.1:9\n\t\t}\n\t}\n",
			[]string{"for a request to /admin… itself, which it does not"}},
		{"a strip_prefix in a route for the prefix", "",
			"\tsigra_portal\n\troute {\n\t\thandle /app* {\n\t\t\tsigra_gate /app/admin* {\n\t\t\t\tgroup admins\n\t\t\t}\n\t\t\turi strip_prefix /app\n\t\t\treverse_proxy 127.0.0.1:9\n\t\t}\n\t}\n", []string{"strips /app from any path that starts so", "for a request to /appadmin…", "Strip /app/ instead"}},
		{"handle_path for the prefix", "",
			"\tsigra_portal\n\thandle_path /app/* {\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n", nil},
		{"gate and no portal", "",
			"\tsigra_gate /admin*\n\treverse_proxy 127.0.0.1:9\n", []string{"Testfile:7", "this site has no sigra_portal"}},
	}
	// Snippets: their tokens keep their own lines, so an imported gate
	// after reverse_proxy is still a directive of its own, and a snippet
	// imported twice is checked in each place.
	snippet := "(gate) {\n\tsigra_gate\n}\n"
	for _, sc := range []struct {
		name, site, wantErr string
	}{
		{"imported gate after reverse_proxy in a route", "\tsigra_portal\n\troute {\n\t\treverse_proxy 127.0.0.1:9\n\t\timport gate\n\t}\n", "reverse_proxy on line"},
		{"imported gate in order", "\tsigra_portal\n\troute {\n\t\timport gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n", ""},
		{"snippet imported twice, once misplaced", "\tsigra_portal\n\troute /a/* {\n\t\timport gate\n\t\trespond a\n\t}\n\troute /b/* {\n\t\trespond b\n\t\timport gate\n\t}\n", "respond on line"},
	} {
		t.Run(sc.name, func(t *testing.T) {
			src := snippet + "http://127.0.0.1:9 {\n" + sc.site + "}\n"
			checkAdapted(t, src, adaptCaddyfile(src), sc.wantErr)
		})
	}
	// Caddy takes a top-level directive's matcher out of the tokens the
	// check reads: it reads the matcher back from the file, so a block
	// that matches all (* or /*) holds a portal as well as a bare one,
	// and /app/* is named. (From a file it cannot read, any matcher
	// counts: the cases above.)
	for _, fc := range []struct{ name, src, wantErr string }{
		// A snippet's {args[N]} matcher is read from its import line.
		{"handle {args[0]} with *, before the gate's route", "(fallback) {\n\thandle {args[0]} {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\timport fallback *\n\troute {\n\t\tsigra_gate\n\t}\n}\n",
			"handle on line 2 runs before the route block on line 9 that holds it"},
		{"handle {args[0]} with /api/*, before the gate's route", "(fallback) {\n\thandle {args[0]} {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\timport fallback /api/*\n\troute {\n\t\tsigra_gate\n\t}\n}\n", ""},
		{"portal in handle {args[0]} with *", "(wrap) {\n\thandle {args[0]} {\n\t\tsigra_portal\n\t\tsigra_gate\n\t\treverse_proxy {args[1]}\n\t}\n}\nhttp://127.0.0.1:9 {\n\timport wrap * 127.0.0.1:9\n}\n", ""},
		// What an invoked named route does is read from its JSON.
		{"a named route that answers, invoked before the gate's handle", "&(app) {\n\treverse_proxy 127.0.0.1:9\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tinvoke app\n\thandle {\n\t\tsigra_gate\n\t}\n}\n",
			"invoke on line 6 runs before the handle block on line 7 that holds it"},
		{"a named route without the portal", "&(logs) {\n\tlog_append x y\n}\nhttp://127.0.0.1:9 {\n\tsigra_gate /admin*\n\tinvoke logs\n\treverse_proxy 127.0.0.1:9\n}\n", "this site has no sigra_portal"},
		// A named route may hold the portal, or a gate of a site whose
		// portal is at its top level.
		{"gate, and a portal in an invoked named route", "&(auth) {\n\tsigra_portal\n}\nhttp://127.0.0.1:9 {\n\troute {\n\t\tinvoke auth\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n", ""},
		{"gate, and a portal in a named route invoked with a matcher", "&(auth) {\n\tsigra_portal\n}\nhttp://127.0.0.1:9 {\n\troute {\n\t\tinvoke /nothing/* auth\n\t\tsigra_gate /admin*\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			"the site's only sigra_portal is in the named route auth, invoked on line 6 with a matcher"},
		{"a portal in handle_errors only", "http://127.0.0.1:9 {\n\thandle_errors {\n\t\tsigra_portal\n\t}\n\tsigra_gate /admin*\n\treverse_proxy 127.0.0.1:9\n}\n",
			"sigra_portal: it is inside handle_errors on line 2, which runs only for errors"},
		{"gate in a named route", "&(gated) {\n\troute {\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tinvoke gated\n}\n", ""},
		// Caddy keeps the first handler only of a named route whose
		// directives have no matcher: the gate, or the proxy, would vanish.
		{"gate and proxy bare in a named route", "&(gated) {\n\tsigra_gate\n\treverse_proxy 127.0.0.1:9\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tinvoke gated\n}\n", "Caddy keeps only the first handler of a named route"},
		{"portal and gate bare in a named route", "&(auth) {\n\tsigra_portal\n\tsigra_gate\n}\nhttp://127.0.0.1:9 {\n\tinvoke auth\n\trespond app\n}\n", "Caddy keeps only the first handler of a named route"},
		// Invokes are followed: in a block, and from a named route to
		// another.
		{"a handle invoking a route that answers, before the gate's route", "&(app) {\n\treverse_proxy 127.0.0.1:9\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\thandle {\n\t\tinvoke app\n\t}\n\troute {\n\t\tsigra_gate\n\t}\n}\n",
			"handle on line 6 runs before the route block on line 9 that holds it"},
		{"a named route invoking one that answers", "&(b) {\n\treverse_proxy 127.0.0.1:9\n}\n&(a) {\n\tinvoke b\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tinvoke a\n\thandle {\n\t\tsigra_gate\n\t}\n}\n",
			"invoke on line 9 runs before the handle block on line 10 that holds it"},
		{"the portal two named routes away", "&(auth2) {\n\tsigra_portal\n}\n&(auth) {\n\tinvoke auth2\n}\nhttp://127.0.0.1:9 {\n\troute {\n\t\tinvoke auth\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n", ""},
		// A snippet imported through another, and one imported with a
		// block: the matcher is read through the chain.
		{"handle {args[0]} through two imports", "(fallback) {\n\thandle {args[0]} {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n(site) {\n\timport fallback {args[0]}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\timport site *\n\troute {\n\t\tsigra_gate\n\t}\n}\n",
			"handle on line 2 runs before the route block on line 12 that holds it"},
		{"handle {args[0]} imported with a block", "(s) {\n\thandle {args[0]} {\n\t\t{block}\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\timport s * {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\troute {\n\t\tsigra_gate\n\t}\n}\n",
			"handle on line 2 runs before the route block on line 11 that holds it"},
		// A directive named "" is Caddy's to refuse, not a panic.
		{"an empty directive name", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\troute {\n\t\t\"\" {\n\t\t}\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n", "unrecognized directive"},
		{"portal in handle *, from a file", "http://127.0.0.1:9 {\n\thandle * {\n\t\tsigra_portal\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n", ""},
		{"portal in route /*, from a file", "http://127.0.0.1:9 {\n\troute /* {\n\t\tsigra_portal\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n", ""},
		// A handle whose matcher lets in only the prefix keeps a request
		// without it away from a strip_prefix inside.
		{"a strip_prefix after gates on both paths, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /app/admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /ADMIN* {\n\t\tgroup admins\n\t}\n\turi strip_prefix /app\n\treverse_proxy 127.0.0.1:9\n}\n", "strips /app from any path that starts so, so the app also sees /admin… for a request to /appadmin…, which no gate with this one's requirements covers. Strip /app/ instead"},
		{"a strip_prefix after a gate on the stripped path only, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /app/adm* {\n\t\tgroup admins\n\t}\n\turi strip_prefix /app\n\treverse_proxy 127.0.0.1:9\n}\n", "for a request to /appadmin…"},
		// What runs after the gate inside a handle counts as well.
		{"a strip_prefix in a later handle, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin*\n\thandle /app/* {\n\t\turi strip_prefix /app\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			"uri strip_prefix on line 5 strips /app after this gate, which sees /app/admin… where the app will see /admin…"},
		{"a strip_prefix in a later handle, both gated, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin*\n\tsigra_gate /app/admin*\n\thandle /app/* {\n\t\turi strip_prefix /app\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n", ""},
		{"a rewrite into the gated path in a later handle, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin*\n\thandle /x/* {\n\t\trewrite * /admin{uri}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			"rewrite on line 5 sends requests to /admin{http.request.uri}"},
		{"a rewrite within the gated path in a later handle, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin*\n\thandle /admin/* {\n\t\trewrite * /admin/index.php\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n", ""},
		// Cases from a review of realistic configs: a way into a gate's
		// path is none when the requests already met its requirements.
		{"a rewrite into a gate that asks no more than the bare one, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /assets/* {\n\t\tassertion off\n\t}\n\trewrite /favicon.ico /assets/favicon.ico\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		{"a rewrite into an optional gate, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /api/* {\n\t\toptional\n\t}\n\trewrite /v1/* /api{uri}\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		{"a rewrite from a path gated alike, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /dashboard {\n\t\tgroup admins\n\t}\n\trewrite /dashboard /admin/dashboard\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		{"a rewrite from a path gated for less, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /dashboard {\n\t\tmfa\n\t}\n\trewrite /dashboard /admin/dashboard\n\treverse_proxy 127.0.0.1:9\n}\n",
			"rewrite on line 9 sends requests to /admin/dashboard"},
		{"a try_files in a handle for a named path matcher inside the gate's path, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\t@admin path /admin/*\n\thandle @admin {\n\t\ttry_files {path} /admin/index.html\n\t\tfile_server\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		{"a rewrite whose placeholder keeps a known start, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /api/admin* {\n\t\tgroup admins\n\t}\n\trewrite /v1/* /api{uri}\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		{"a strip_prefix beside an optional gate, under a bare one, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /public/* {\n\t\toptional\n\t}\n\thandle /app/* {\n\t\turi strip_prefix /app\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			""},
		{"a handle_path proxying after a gate for the stripped path, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /app/* {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\thandle {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			"handle_path on line 7 strips /app after this gate, which sees /app/admin\u2026 where the app will see /admin\u2026"},
		// reverse_proxy's own rewrite sets the URI the app is sent.
		{"a proxy rewriting into the gated path, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\treverse_proxy {\n\t\tto 127.0.0.1:9\n\t\trewrite /admin{uri}\n\t}\n}\n",
			"the rewrite in reverse_proxy on line 9 sends requests to /admin{http.request.uri}"},
		{"a proxy with a matcher rewriting into the gated path, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\treverse_proxy /x/* {\n\t\tto 127.0.0.1:9\n\t\trewrite /admin/x\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"the rewrite in reverse_proxy on line 8 sends requests to /admin/x"},
		{"a proxy rewriting within the gated path, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\treverse_proxy /admin/* {\n\t\tto 127.0.0.1:9\n\t\trewrite /admin/v2{uri}\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		{"a proxy rewriting elsewhere, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\treverse_proxy {\n\t\tto 127.0.0.1:9\n\t\trewrite /app{uri}\n\t}\n}\n",
			""},
		{"a proxy to another app rewriting into the gated path, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle /blog/* {\n\t\treverse_proxy {\n\t\t\tto 127.0.0.1:7\n\t\t\trewrite /admin{uri}\n\t\t}\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		// A named route's own changes of the path, read from its JSON.
		{"an invoked route rewriting into the gated path, from a file", "&(r) {\n\troute {\n\t\trewrite * /admin{uri}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tinvoke r\n\treverse_proxy 127.0.0.1:9\n}\n",
			"the rewrite in the named route r (invoked on line 13) sends requests to /admin{http.request.uri}"},
		{"a route invoked with a matcher rewriting into the gated path, from a file", "&(r) {\n\troute {\n\t\trewrite * /admin{uri}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tinvoke /x/* r\n\treverse_proxy 127.0.0.1:9\n}\n",
			"the rewrite in the named route r (invoked on line 13)"},
		{"a route invoked through another, its proxy rewriting into the gated path, from a file", "&(inner) {\n\treverse_proxy {\n\t\tto 127.0.0.1:9\n\t\trewrite /admin/x\n\t}\n}\n&(r) {\n\tinvoke inner\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tinvoke r\n}\n",
			"the rewrite in the named route r (invoked on line 15) sends requests to /admin/x"},
		{"an invoked route's try_files into the gated path, from a file", "&(r) {\n\ttry_files {path} /admin/index.php\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tinvoke r\n\treverse_proxy 127.0.0.1:9\n}\n",
			"the try_files in the named route r (invoked on line 9) sends requests to /admin/index.php"},
		{"an invoked route's uri replace into the gated path, from a file", "&(r) {\n\turi replace /x/ /admin/\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tinvoke r\n\treverse_proxy 127.0.0.1:9\n}\n",
			"the replace in the named route r (invoked on line 9) sends requests to /admin/"},
		{"an invoked route's try_files to a front controller, from a file", "&(r) {\n\ttry_files {path} /index.php\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tinvoke r\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		{"an invoked route rewriting elsewhere, from a file", "&(r) {\n\troute {\n\t\trewrite * /app{uri}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tinvoke r\n}\n",
			""},
		{"an invoked route to another app rewriting into the gated path, from a file", "&(blog) {\n\troute {\n\t\trewrite * /admin{uri}\n\t\treverse_proxy 127.0.0.1:7\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle /blog/* {\n\t\tinvoke blog\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		{"an invoked route rewriting within the gated path, from a file", "&(r) {\n\troute {\n\t\trewrite * /admin/v2{uri}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tinvoke /admin/* r\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		// From a review of the named-route and proxy rewrite checks.
		{"a strip in an invoked named route, from a file", "&(app) {\n\troute {\n\t\turi strip_prefix /app\n\t\treverse_proxy 127.0.0.1:8080\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle /app/* {\n\t\tinvoke app\n\t}\n\thandle {\n\t\treverse_proxy 127.0.0.1:8080\n\t}\n}\n",
			"the strip in the named route app (invoked on line 14) strips /app after this gate"},
		{"a handle_path in an invoked named route, from a file", "&(r) {\n\troute {\n\t\thandle_path /app/* {\n\t\t\treverse_proxy 127.0.0.1:9\n\t\t}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tinvoke r\n}\n",
			"the strip in the named route r (invoked on line 15) strips /app after this gate"},
		{"a strip and a rewrite in an invoked named route, from a file", "&(api) {\n\troute {\n\t\turi strip_prefix /api\n\t\trewrite * /v2{uri}\n\t\treverse_proxy 127.0.0.1:8080\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /v2/admin* {\n\t\tgroup admins\n\t}\n\tinvoke /api/* api\n\treverse_proxy 127.0.0.1:8080\n}\n",
			"in the named route api (invoked on line 14)"},
		{"a named route rewriting, proxying only some paths elsewhere, from a file", "&(legacy) {\n\troute {\n\t\trewrite * /admin{uri}\n\t\treverse_proxy /blog/* 127.0.0.1:7\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle /x/* {\n\t\tinvoke legacy\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"the rewrite in the named route legacy (invoked on line 14) sends requests to /admin{http.request.uri}"},
		{"php_fastcgi's try_files into the gated path, from a file", "http://127.0.0.1:9 {\n\troot * /srv/app/public\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tphp_fastcgi 127.0.0.1:9000 {\n\t\ttry_files {path} /admin/index.php\n\t}\n}\n",
			"the try_files in php_fastcgi on line 9 sends requests to /admin/index.php"},
		{"a rewrite in php_fastcgi into the gated path, from a file", "http://127.0.0.1:9 {\n\troot * /srv/app/public\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tphp_fastcgi 127.0.0.1:9000 {\n\t\trewrite /admin{uri}\n\t}\n}\n",
			"the rewrite in php_fastcgi on line 9 sends requests to /admin{http.request.uri}"},
		{"php_fastcgi's directory index with its index off, from a file", "http://127.0.0.1:9 {\n\troot * /srv/app/public\n\tsigra_portal\n\tsigra_gate /admin/* {\n\t\tgroup admins\n\t}\n\tphp_fastcgi 127.0.0.1:9000 {\n\t\tindex off\n\t\ttry_files {path} {path}/index.php\n\t}\n}\n",
			"the try_files in php_fastcgi on line 9 sends requests to {http.request.uri.path}/index.php"},
		{"the last of a proxy's rewrites, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\treverse_proxy {\n\t\tto 127.0.0.1:9\n\t\trewrite /app{uri}\n\t\trewrite /admin{uri}\n\t}\n}\n",
			"the rewrite in reverse_proxy on line 10 sends requests to /admin{http.request.uri}"},
		{"php_fastcgi in a named route, from a file", "&(php) {\n\troute {\n\t\troot * /srv/app/public\n\t\tphp_fastcgi unix//run/php/php-fpm.sock\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin/* {\n\t\tgroup admins\n\t}\n\tinvoke php\n}\n",
			""},
		{"php_fastcgi's directory index, redirected first, from a file", "http://127.0.0.1:9 {\n\troot * /srv/app/public\n\tsigra_portal\n\tsigra_gate /admin/* {\n\t\tgroup admins\n\t}\n\tphp_fastcgi 127.0.0.1:9000 {\n\t\ttry_files {path} {path}/index.php index.php\n\t}\n}\n",
			""},
		{"an admin SPA's fallback inside a named route, from a file", "&(spa) {\n\troute {\n\t\troot * /srv/spa\n\t\thandle /admin/* {\n\t\t\ttry_files {path} /admin/index.html\n\t\t\tfile_server\n\t\t}\n\t\thandle {\n\t\t\ttry_files {path} /index.html\n\t\t\tfile_server\n\t\t}\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tinvoke spa\n}\n",
			""},
		{"an API version prefix inside a named route, from a file", "&(api) {\n\troute {\n\t\trewrite /v1/* /api{uri}\n\t\treverse_proxy 127.0.0.1:8080\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /api/admin/* {\n\t\tgroup admins\n\t}\n\tinvoke api\n}\n",
			""},
		{"a top-level proxy for another app's paths rewriting into the gated path, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /api/* {\n\t\tgroup api-users\n\t}\n\treverse_proxy /search/* {\n\t\tto 127.0.0.1:7700\n\t\trewrite /api{uri}\n\t}\n\treverse_proxy 127.0.0.1:8080\n}\n",
			""},
		{"a top-level invoke of another app's route rewriting into the gated path, from a file", "&(search) {\n\troute {\n\t\trewrite * /api{uri}\n\t\treverse_proxy 127.0.0.1:7700\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /api/* {\n\t\tgroup api-users\n\t}\n\tinvoke /search/* search\n\treverse_proxy 127.0.0.1:8080\n}\n",
			""},
		{"a named route mounting docs from another upstream, from a file", "&(docs) {\n\thandle_path /docs/* {\n\t\treverse_proxy 10.0.0.5:8000\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tinvoke docs\n\treverse_proxy 127.0.0.1:8080\n}\n",
			""},
		{"a named route stripping for a blog on another upstream, from a file", "&(blog) {\n\troute /blog/* {\n\t\turi strip_prefix /blog\n\t\treverse_proxy 10.0.0.6:2368\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\troute {\n\t\tinvoke blog\n\t\treverse_proxy 127.0.0.1:8080\n\t}\n}\n",
			""},
		{"a named route mounting the gated app itself, from a file", "&(docs) {\n\thandle_path /docs/* {\n\t\treverse_proxy 127.0.0.1:8080\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tinvoke docs\n\treverse_proxy 127.0.0.1:8080\n}\n",
			"the strip in the named route docs (invoked on line 12) strips /docs after this gate"},
		{"a rewrite to a percent-encoded gated path, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /public* {\n\t\toptional\n\t}\n\trewrite /x/* /%61dmin{uri}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"rewrite on line 9 sends requests to /%61dmin{http.request.uri}"},
		{"a front controller's try_files before a bare handle holding path gates, from a file", "http://127.0.0.1:9 {\n\troot * /srv/app/public\n\tsigra_portal\n\ttry_files {path} /index.php?{query}\n\thandle {\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t\tphp_fastcgi 127.0.0.1:9000\n\t}\n}\n",
			"try_files on line 4 runs before the handle block on line 5 that holds this gate"},
		{"a front controller's try_files written before the gate in a route, from a file", "http://127.0.0.1:9 {\n\troot * /srv/app/public\n\troute {\n\t\tsigra_portal\n\t\ttry_files {path} /index.php?{query}\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t\tphp_fastcgi 127.0.0.1:9000\n\t}\n}\n",
			"try_files on line 5 runs before this gate"},
		{"a front controller's try_files in a named route invoked before the gate, from a file", "&(front) {\n\ttry_files {path} /index.php?{query}\n}\nhttp://127.0.0.1:9 {\n\troot * /srv/app/public\n\tsigra_portal\n\troute {\n\t\tinvoke front\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t\tphp_fastcgi 127.0.0.1:9000\n\t}\n}\n",
			"invoke on line 8 runs before this gate"},
		{"a front controller's try_files ordered before the gates, from a file", "{\n\torder try_files before sigra_portal\n}\nhttp://127.0.0.1:9 {\n\troot * /srv/app/public\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\ttry_files {path} /index.php?{query}\n\tphp_fastcgi 127.0.0.1:9000\n}\n",
			"try_files on line 10 runs before this gate"},
		{"a front controller's try_files written after the gate in a route, from a file", "http://127.0.0.1:9 {\n\troot * /srv/app/public\n\troute {\n\t\tsigra_portal\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t\ttry_files {path} /index.php?{query}\n\t\tphp_fastcgi 127.0.0.1:9000\n\t}\n}\n",
			""},
		{"a rewrite after a named route's gate, from a file", "&(guard) {\n\troute {\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\troute {\n\t\tinvoke guard\n\t\trewrite /x/* /admin{uri}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			"invoke on line 11 runs the named route guard, which holds a sigra_gate, and rewrite on line 12 may change the path after it"},
		{"a handle_path after a named route's gate, from a file", "&(guard) {\n\troute {\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tinvoke guard\n\thandle_path /app/* {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"and handle_path on line 11 may change the path after it"},
		{"a front controller's try_files before a named route's gate, from a file", "&(guard) {\n\troute {\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t}\n}\nhttp://127.0.0.1:9 {\n\troot * /srv/app/public\n\tsigra_portal\n\ttry_files {path} /index.php?{query}\n\tinvoke guard\n\tphp_fastcgi 127.0.0.1:9000\n}\n",
			"try_files on line 11 runs before invoke on line 12, whose named route guard holds a sigra_gate"},
		{"a named route's gate before the proxy, from a file", "&(guard) {\n\troute {\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\troute {\n\t\tinvoke guard\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			""},
		{"a named route's gate before handles, from a file", "&(guard) {\n\troute {\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\troute {\n\t\tinvoke guard\n\t\thandle /api/* {\n\t\t\treverse_proxy 127.0.0.1:7\n\t\t}\n\t\thandle {\n\t\t\treverse_proxy 127.0.0.1:9\n\t\t}\n\t}\n}\n",
			""},
		{"a uri replace alias of a version gated alike, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /api/v2/admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /api/latest/admin* {\n\t\tgroup admins\n\t}\n\turi /api/latest/* replace /api/latest/ /api/v2/ 1\n\treverse_proxy 127.0.0.1:8080\n}\n",
			""},
		{"a uri replace alias of a version gated for less, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /api/v2/admin* {\n\t\tgroup admins\n\t}\n\turi /api/latest/* replace /api/latest/ /api/v2/ 1\n\treverse_proxy 127.0.0.1:8080\n}\n",
			"uri replace on line 7 sends requests to /api/v2/"},
		{"a default version for unversioned paths, gated alike, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /v1/admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\t@unversioned not path /v1/* /v2/*\n\trewrite @unversioned /v1{uri}\n\treverse_proxy 127.0.0.1:8080\n}\n",
			""},
		{"a default version for unversioned paths, gated for less, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /v1/admin* {\n\t\tgroup admins\n\t}\n\t@unversioned not path /v1/* /v2/*\n\trewrite @unversioned /v1{uri}\n\treverse_proxy 127.0.0.1:8080\n}\n",
			"rewrite on line 8 sends requests to /v1{http.request.uri}"},
		{"an nginx-style try_files beside a gate on the front controller's path, from a file", "http://127.0.0.1:9 {\n\troot * /srv/laravel/public\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /index.php/* {\n\t\tgroup admins\n\t}\n\tphp_fastcgi 127.0.0.1:9000 {\n\t\ttry_files {path} {path}/ /index.php?{query}\n\t}\n\tfile_server\n}\n",
			""},
		{"two PHP apps on one FastCGI server, each with its root, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /index.php/* {\n\t\tgroup admins\n\t}\n\thandle_path /blog/* {\n\t\tsigra_gate /wp-admin* {\n\t\t\tgroup editors\n\t\t}\n\t\troot * /srv/wordpress\n\t\tphp_fastcgi unix//run/php/php8.2-fpm.sock\n\t\tfile_server\n\t}\n\thandle {\n\t\troot * /srv/laravel/public\n\t\tphp_fastcgi unix//run/php/php8.2-fpm.sock\n\t\tfile_server\n\t}\n}\n",
			""},
		{"two PHP apps on one FastCGI server, the root written without a matcher, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /index.php/* {\n\t\tgroup admins\n\t}\n\thandle_path /blog/* {\n\t\tsigra_gate /wp-admin* {\n\t\t\tgroup editors\n\t\t}\n\t\troot * /srv/wordpress\n\t\tphp_fastcgi unix//run/php/php8.2-fpm.sock\n\t\tfile_server\n\t}\n\thandle {\n\t\troot /srv/laravel/public\n\t\tphp_fastcgi unix//run/php/php8.2-fpm.sock\n\t\tfile_server\n\t}\n}\n",
			""},
		{"one PHP app mounted twice on one FastCGI server, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /index.php/* {\n\t\tgroup admins\n\t}\n\thandle_path /blog/* {\n\t\tsigra_gate /wp-admin* {\n\t\t\tgroup editors\n\t\t}\n\t\troot * /srv/wordpress\n\t\tphp_fastcgi unix//run/php/php8.2-fpm.sock\n\t\tfile_server\n\t}\n\thandle {\n\t\troot * /srv/wordpress\n\t\tphp_fastcgi unix//run/php/php8.2-fpm.sock\n\t\tfile_server\n\t}\n}\n",
			"handle_path on line 10 strips /blog after this gate"},
		{"a uri replace cutting a prefix out, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\turi /legacy/* replace /legacy \"\"\n\treverse_proxy 127.0.0.1:3000\n}\n",
			"uri replace on line 6 sends requests to \"\" (cutting the path)"},
		{"a uri path_regexp cutting a prefix out, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\turi path_regexp ^/legacy \"\"\n\treverse_proxy 127.0.0.1:3000\n}\n",
			"uri path_regexp on line 6 sends requests to \"\" (cutting the path)"},
		{"a uri path_regexp cutting a suffix off, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\turi path_regexp \\.html$ \"\"\n\treverse_proxy 127.0.0.1:3000\n}\n",
			""},
		{"a named route's uri replace cutting a prefix out, from a file", "&(legacy) {\n\turi /legacy/* replace /legacy \"\"\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tinvoke legacy\n\treverse_proxy 127.0.0.1:3000\n}\n",
			"the replace in the named route legacy (invoked on line 9)"},
		{"a strip before a file server that passes missing files on, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\troute /assets/* {\n\t\turi strip_prefix /assets\n\t\tfile_server {\n\t\t\tpass_thru\n\t\t}\n\t}\n\treverse_proxy 127.0.0.1:3000\n}\n",
			"uri strip_prefix on line 7 strips /assets after this gate"},
		{"a named route's replace before forward_auth, from a file", "&(legacy) {\n\troute /old/* {\n\t\turi replace /old/ /admin/\n\t\tforward_auth 127.0.0.1:9091 {\n\t\t\turi /api/verify\n\t\t}\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tinvoke legacy\n\treverse_proxy 127.0.0.1:3000\n}\n",
			"the replace in the named route legacy (invoked on line 14)"},
		{"a handle_path serving the gated files, from a file", "http://127.0.0.1:9 {\n\troot * /srv/app\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /app/* {\n\t\tfile_server\n\t}\n\tfile_server\n}\n",
			"handle_path on line 7 strips /app after this gate"},
		{"php_fastcgi's directory index.html, from a file", "http://127.0.0.1:9 {\n\troot * /srv/app\n\tsigra_portal\n\tsigra_gate /admin/* {\n\t\tgroup admins\n\t}\n\tphp_fastcgi 127.0.0.1:9000 {\n\t\ttry_files {path} {path}/index.html index.php\n\t}\n\tfile_server\n}\n",
			"the try_files in php_fastcgi on line 8 sends requests to {http.request.uri.path}/index.html"},
		{"a named route proxying *.php to the gated app, from a file", "&(php) {\n\t@php path *.php\n\troute @php {\n\t\treverse_proxy 127.0.0.1:9000\n\t}\n}\nhttp://127.0.0.1:9 {\n\troot * /srv/app\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /app/* {\n\t\treverse_proxy 127.0.0.1:9000\n\t}\n\thandle {\n\t\tinvoke php\n\t\tfile_server\n\t}\n}\n",
			"handle_path on line 13 strips /app after this gate"},
		{"one PHP app under a root spelt two ways, from a file", "http://127.0.0.1:9 {\n\troot * /srv/app\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /app/* {\n\t\troot * /srv//app/\n\t\tphp_fastcgi 127.0.0.1:9000\n\t}\n\tphp_fastcgi 127.0.0.1:9000\n}\n",
			"handle_path on line 7 strips /app after this gate"},
		{"one PHP app, its root set in php_fastcgi, from a file", "http://127.0.0.1:9 {\n\troot * /srv/app\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /app/* {\n\t\troot * /srv/other\n\t\tphp_fastcgi 127.0.0.1:9000 {\n\t\t\troot /srv/app\n\t\t}\n\t}\n\tphp_fastcgi 127.0.0.1:9000\n}\n",
			"handle_path on line 7 strips /app after this gate"},
		{"one PHP app, another root written after it in a route, from a file", "http://127.0.0.1:9 {\n\troot * /srv/app\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /app/* {\n\t\troute {\n\t\t\tphp_fastcgi 127.0.0.1:9000\n\t\t\troot * /srv/other\n\t\t}\n\t}\n\tphp_fastcgi 127.0.0.1:9000\n}\n",
			"handle_path on line 7 strips /app after this gate"},
		{"one PHP app, its root from vars, from a file", "http://127.0.0.1:9 {\n\troot * /srv/other\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /app/* {\n\t\tvars root /srv/app\n\t\tphp_fastcgi 127.0.0.1:9000\n\t}\n\tphp_fastcgi 127.0.0.1:9000\n}\n",
			"handle_path on line 7 strips /app after this gate"},
		{"a named route's front controller with a query, from a file", "&(app) {\n\troute {\n\t\ttry_files {path} /index.php?{query}\n\t\treverse_proxy 127.0.0.1:3000\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tinvoke app\n}\n",
			""},
		{"a site's SPA fallback after a named route's bare gate, from a file", "&(auth) {\n\troute {\n\t\tsigra_gate {\n\t\t\tgroup staff\n\t\t}\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tinvoke auth\n\thandle /api/* {\n\t\treverse_proxy 127.0.0.1:3000\n\t}\n\thandle {\n\t\troot * /srv/spa\n\t\ttry_files {path} /index.html\n\t\tfile_server\n\t}\n}\n",
			""},
		{"a bare named gate invoked with a matcher before a front controller, from a file", "&(admingate) {\n\troute {\n\t\tsigra_gate {\n\t\t\tgroup admins\n\t\t}\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tinvoke /admin* admingate\n\troot * /var/www/app/public\n\ttry_files {path} {path}/ /index.php?{query}\n\tphp_fastcgi 127.0.0.1:9000\n\tfile_server\n}\n",
			"runs before invoke on line 11, whose named route admingate holds a sigra_gate"},
		{"a bare named gate invoked in a path block, then a rewrite, from a file", "&(admingate) {\n\troute {\n\t\tsigra_gate {\n\t\t\tgroup admins\n\t\t}\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\troute /admin* {\n\t\tinvoke admingate\n\t}\n\troute {\n\t\trewrite /x/* /admin{uri}\n\t\treverse_proxy 127.0.0.1:8000\n\t}\n}\n",
			"rewrite on line 15 may change the path after it"},
		{"a relative try_files fallback into the gated path, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\troot * /srv/www\n\ttry_files {path} admin/index.html\n\tfile_server\n}\n",
			"try_files on line 8 sends requests to admin/index.html"},
		{"a named gate beside a handle_path to another app, from a file", "&(app) {\n\troute {\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t\treverse_proxy 127.0.0.1:8000\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\thandle_path /docs/* {\n\t\treverse_proxy 127.0.0.1:8001\n\t}\n\thandle {\n\t\tinvoke app\n\t}\n}\n",
			""},
		{"another root set by a vars block, from a file", "http://127.0.0.1:9 {\n\troot * /srv/app\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\troute /blog/* {\n\t\turi strip_prefix /blog\n\t\troot * /srv/blog\n\t\tvars {\n\t\t\troot /srv/app\n\t\t}\n\t\tphp_fastcgi 127.0.0.1:9000\n\t}\n\tphp_fastcgi 127.0.0.1:9000\n}\n",
			"uri strip_prefix on line 8 strips /blog after this gate"},
		{"a strip without its slash, its own matcher with it, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /app/admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\turi /app/* strip_prefix /app\n\treverse_proxy 127.0.0.1:8000\n}\n",
			""},
		{"a strip without its slash, its own matcher without it, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /app/admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\turi /app* strip_prefix /app\n\treverse_proxy 127.0.0.1:8000\n}\n",
			"strips /app from any path that starts so"},
		{"a directory's slash added, its bare path gated alike, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin/* {\n\t\tgroup admins\n\t}\n\tsigra_gate /admin {\n\t\tgroup admins\n\t}\n\troot * /srv/spa\n\ttry_files {path} {path}/ /index.html\n\tfile_server\n}\n",
			""},
		{"a mount under the gated prefix, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /admin-ui/* {\n\t\treverse_proxy 127.0.0.1:8081\n\t}\n\treverse_proxy 127.0.0.1:8080\n}\n",
			""},
		{"a mount beside the gated prefix, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin/* {\n\t\tgroup admins\n\t}\n\thandle_path /admin-ui/* {\n\t\treverse_proxy 127.0.0.1:8080\n\t}\n\treverse_proxy 127.0.0.1:8080\n}\n",
			"handle_path on line 7 strips /admin-ui after this gate"},
		{"a mount under the gated prefix with an optional gate of its own, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /admin-public/* {\n\t\toptional\n\t}\n\thandle_path /admin-public/* {\n\t\treverse_proxy 127.0.0.1:8080\n\t}\n\treverse_proxy 127.0.0.1:8080\n}\n",
			"handle_path on line 9 strips /admin-public after this gate"},
		{"a rewrite within the gated prefix from a path an optional gate decides, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /admin/public/* {\n\t\toptional\n\t}\n\trewrite /admin/public/x/* /admin/secret{uri}\n\treverse_proxy 127.0.0.1:8080\n}\n",
			"rewrite on line 9 sends requests to /admin/secret{http.request.uri}"},
		{"a strip for another app whose response routes answer, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /files/* {\n\t\treverse_proxy 127.0.0.1:9000 {\n\t\t\t@notfound status 404\n\t\t\thandle_response @notfound {\n\t\t\t\trespond \"not found\" 404\n\t\t\t}\n\t\t}\n\t}\n\treverse_proxy 127.0.0.1:8000\n}\n",
			""},
		{"a strip for another app whose response route hands the request on, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /files/* {\n\t\treverse_proxy 127.0.0.1:9000 {\n\t\t\t@notfound status 404\n\t\t\thandle_response @notfound {\n\t\t\t\theader X-Missing 1\n\t\t\t}\n\t\t}\n\t}\n\treverse_proxy 127.0.0.1:8000\n}\n",
			"handle_path on line 7 strips /files after this gate"},
		{"a handle_path to the app's socket spelt another way, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /blog/* {\n\t\treverse_proxy unix//run//app/./app.sock\n\t}\n\treverse_proxy unix//run/app/app.sock\n}\n",
			"handle_path on line 6 strips /blog after this gate"},
		{"a handle_path to another socket, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /blog/* {\n\t\treverse_proxy unix//run/blog.sock\n\t}\n\treverse_proxy unix//run/app/app.sock\n}\n",
			""},
		{"a handle_path serving files, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /static/* {\n\t\tfile_server\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		{"a path_regexp taking a prefix off, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\turi path_regexp ^/app(/.*)$ $1\n\treverse_proxy 127.0.0.1:9\n}\n",
			"uri path_regexp on line 7 sends requests to $1"},
		{"a uri replace of a longer path into the gated one, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\turi replace /legacy/admin /admin\n\treverse_proxy 127.0.0.1:9\n}\n",
			"uri replace on line 6 sends requests to /admin"},
		{"a bare gate in a handle, a rewrite into its path in another handle, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\thandle /legacy/* {\n\t\trewrite * /admin{uri}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\thandle /admin* {\n\t\tsigra_gate {\n\t\t\tgroup admins\n\t\t}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			"rewrite on line 4 sends requests to /admin{http.request.uri}"},
		{"a rewrite, then the gate in a handle for its path, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\trewrite /x/* /admin{uri}\n\thandle /admin* {\n\t\tsigra_gate {\n\t\t\tgroup admins\n\t\t}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			""},
		// Cases from a review of the day's changes.
		{"a handle_path to another upstream, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /blog/* {\n\t\treverse_proxy 127.0.0.1:10\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		{"a gate in one handle_path, another to another upstream, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\thandle_path /app/* {\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\thandle_path /blog/* {\n\t\treverse_proxy 127.0.0.1:10\n\t}\n}\n",
			""},
		{"a strip_prefix to another upstream beside the gate's handle, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\thandle /api/* {\n\t\turi strip_prefix /api\n\t\treverse_proxy 127.0.0.1:10\n\t}\n\thandle {\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			""},
		{"a handle_path to the upstream of the gate's bare handle, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /app/* {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\thandle {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			"handle_path on line 6 strips /app after this gate"},
		{"a rewrite without arguments, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\trewrite\n\treverse_proxy 127.0.0.1:9\n}\n",
			"rewrite"},
		{"a strip_prefix under the gate of a path whose lower case is longer, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /Ⱥ* {\n\t\tgroup admins\n\t}\n\turi strip_prefix /Ⱥ\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		{"a strip_prefix of a path whose lower case is longer, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /Ⱥ/admin* {\n\t\tgroup admins\n\t}\n\turi strip_prefix /Ⱥ\n\treverse_proxy 127.0.0.1:9\n}\n",
			"strips /Ⱥ"},
		{"a strip_prefix after gates on both paths, one asking less, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /app/admin*\n\turi strip_prefix /app\n\treverse_proxy 127.0.0.1:9\n}\n",
			"with the same requirements"},
		{"a rewrite in a handle beside the gates' handle, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\thandle /legacy/* {\n\t\trewrite * /admin{uri}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\thandle {\n\t\tsigra_gate /legacy/* {\n\t\t\tgroup admins\n\t\t}\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			"rewrite on line 4 sends requests to /admin{http.request.uri}"},
		{"a rewrite from an exact path gated for less than its prefix, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /dashboard* {\n\t\tgroup admins\n\t}\n\tsigra_gate /dashboard {\n\t\toptional\n\t}\n\trewrite /dashboard /admin/dashboard\n\treverse_proxy 127.0.0.1:9\n}\n",
			"rewrite on line 12 sends requests to /admin/dashboard"},
		{"a rewrite from a path that lets preflights through into one that does not, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /v1/* {\n\t\tgroup admins\n\t\tpreflight allow\n\t}\n\trewrite /v1/* /admin{uri}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"rewrite on line 10 sends requests to /admin{http.request.uri}"},
		{"a rewrite between paths that both let preflights through, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t\tpreflight allow\n\t}\n\tsigra_gate /v1/* {\n\t\tgroup admins\n\t\tpreflight allow\n\t}\n\trewrite /v1/* /admin{uri}\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		{"a rewrite of the query only, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\trewrite /search ?q=all\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		{"a named matcher whose name differs in case only, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\t@admin path /admin/*\n\t@ADMIN path /x/*\n\thandle @ADMIN {\n\t\ttry_files {path} /admin/index.php\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"try_files on line 9 sends requests to /admin/index.php"},
		{"a rewrite from a glob, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /api/v2/x* {\n\t\tgroup admins\n\t}\n\trewrite /v*/x /api{uri}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"rewrite on line 6 sends requests to /api{http.request.uri}"},
		{"a handle_path proxying from a route inside, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /app/* {\n\t\troute {\n\t\t\treverse_proxy 127.0.0.1:9\n\t\t}\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"handle_path on line 6 strips /app"},
		{"a gate in a route, a rewrite into its path in a handle, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\troute {\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\thandle /legacy/* {\n\t\trewrite * /admin{uri}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			"rewrite on line 10 sends requests to /admin{http.request.uri}"},
		{"a strip_prefix in a handle for a method, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /app/admin* {\n\t\tgroup admins\n\t}\n\t@get method GET\n\thandle @get {\n\t\turi strip_prefix /app\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			"for a request to /admin… itself, which it does not"},
		{"a strip_prefix written with a trailing slash, both paths gated, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /app/admin* {\n\t\tgroup admins\n\t}\n\turi strip_prefix /app/\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		// Cases from an adversarial review of the strip and rewrite checks.
		{"a handle_path for a prefix without its slash, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /app/admin* {\n\t\tgroup admins\n\t}\n\thandle_path /app* {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"for a request to /appadmin…"},
		{"a handle_path to the upstream of the gated path's handle, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle /admin/* {\n\t\treverse_proxy 127.0.0.1:10\n\t}\n\thandle_path /panel/* {\n\t\treverse_proxy 127.0.0.1:10\n\t}\n\thandle {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			"handle_path on line 9 strips /panel"},
		{"a handle_path to the same upstream spelt otherwise, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /app/* {\n\t\treverse_proxy http://localhost:9\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"handle_path on line 6 strips /app"},
		{"a handle_path to the same upstream as a mapped address, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /app/* {\n\t\treverse_proxy [::ffff:127.0.0.1]:9\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"handle_path on line 6 strips /app"},
		{"a handle_path to the same upstream as another loopback address, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /app/* {\n\t\treverse_proxy 127.0.0.2:9\n\t}\n\treverse_proxy [0:0::1]:9\n}\n",
			"handle_path on line 6 strips /app"},
		{"an invoked route that fails every request before the gate, from a file", "&(fail) {\n\terror 404\n}\nhttp://127.0.0.1:9 {\n\troute {\n\t\tsigra_portal\n\t\tinvoke fail\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			"invoke on line 7"},
		{"a handle_path to an upstream from a placeholder, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /app/* {\n\t\treverse_proxy {env.SIGRA_TEST_UPSTREAM}\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"handle_path on line 6 strips /app"},
		{"a rewrite from two paths, one gated alike, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /legacy* {\n\t\tgroup admins\n\t}\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\t@old path /legacy/* /old/*\n\thandle @old {\n\t\trewrite * /admin{uri}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			"rewrite on line 11 sends requests to /admin{http.request.uri}"},
		{"a strip_prefix in a route for the prefix, the proxy outside, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /app/admin* {\n\t\tgroup admins\n\t}\n\troute /app/* {\n\t\turi strip_prefix /app/\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"for a request to /admin… itself, which it does not"},
		{"a handle_path for the prefix, the same upstream outside, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /app/admin* {\n\t\tgroup admins\n\t}\n\thandle_path /app/* {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"for a request to /admin… itself, which it does not"},
		{"a path_regexp to a slash and a capture, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\turi path_regexp ^/legacy/(.*)$ /$1\n\treverse_proxy 127.0.0.1:9\n}\n",
			"uri path_regexp on line 6 sends requests to /$1"},
		{"a rewrite to a slash and a placeholder, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\trewrite /go /{query.to}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"rewrite on line 6 sends requests to /{http.request.uri.query.to}"},
		{"a uri replace cutting a path down to a gated one, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\turi replace /legacy/ /\n\treverse_proxy 127.0.0.1:9\n}\n",
			"uri replace on line 6 sends requests to /"},
		{"a uri replace merging slashes, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\turi replace // /\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		{"a route that rewrites and answers before the gate's route, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\troute /legacy/* {\n\t\trewrite * /admin{uri}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\troute {\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			"rewrite on line 4 sends requests to /admin{http.request.uri}"},
		{"a gate in a handle_path for the path the app sees, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /app/* {\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		{"a rewrite in a handle with its own gate alike, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\thandle /admin/* {\n\t\tsigra_gate {\n\t\t\tgroup admins\n\t\t}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\thandle /old-admin/* {\n\t\tsigra_gate {\n\t\t\tgroup admins\n\t\t}\n\t\turi replace /old-admin/ /admin/\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			""},
		// Cases from a last pass over realistic configs.
		{"a gate in a handle_path, the same app proxied outside, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\thandle_path /app/* {\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"it is inside handle_path on line 3, which strips its prefix first"},
		{"a gate in a handle_path, another app outside, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\thandle_path /app/* {\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\treverse_proxy 127.0.0.1:10\n}\n",
			""},
		{"a PHP front controller's try_files before the gate's handle, from a file", "http://127.0.0.1:9 {\n\troot * /srv/public\n\tsigra_portal\n\ttry_files {path} /index.php?{query}\n\thandle /admin* {\n\t\tsigra_gate {\n\t\t\tgroup admins\n\t\t}\n\t\tphp_fastcgi 127.0.0.1:9000\n\t}\n\tphp_fastcgi 127.0.0.1:9000\n}\n",
			"try_files on line 4 runs before the handle block on line 5 that holds this gate"},
		{"a PHP front controller, the gate at the top, from a file", "http://127.0.0.1:9 {\n\troot * /srv/public\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\ttry_files {path} /index.php?{query}\n\tphp_fastcgi 127.0.0.1:9000\n}\n",
			""},
		{"a try_files adding a slash under a gate on /admin/*, from a file", "http://127.0.0.1:9 {\n\troot * /srv/public\n\tsigra_portal\n\tsigra_gate /admin/* {\n\t\tgroup admins\n\t}\n\ttry_files {path} {path}/ /index.php?{query}\n\tphp_fastcgi 127.0.0.1:9000\n}\n",
			"try_files on line 7 sends requests to {http.request.uri.path}/"},
		{"a rewrite into a gate on two paths, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\t@admin path /admin* /settings*\n\tsigra_gate @admin {\n\t\tgroup admins\n\t}\n\trewrite /old-admin/* /admin{uri}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"rewrite on line 7 sends requests to /admin{http.request.uri}"},
		{"a gate snippet imported twice, a rewrite between its paths, from a file", "(gate) {\n\tsigra_gate {args[0]} {\n\t\tgroup {args[1]}\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\timport gate /admin* admins\n\timport gate /old-admin* admins\n\trewrite /old-admin/* /admin{uri}\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		// Safe configs a false-refusal check found refused.
		{"a gate on a whole app mounted by handle_path, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /grafana/* {\n\t\tgroup ops\n\t}\n\thandle_path /grafana/* {\n\t\treverse_proxy 127.0.0.1:3000\n\t}\n\trespond \"not found\" 404\n}\n",
			""},
		{"a gate on a whole app mounted by handle_path, another app beside, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /grafana/* {\n\t\tgroup ops\n\t}\n\thandle_path /grafana/* {\n\t\treverse_proxy 127.0.0.1:3000\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		{"a rewrite with a named matcher from a path gated alike, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /manage/* {\n\t\tgroup admins\n\t}\n\t@legacy path /manage/*\n\trewrite @legacy /admin{uri}\n\treverse_proxy 127.0.0.1:9\n}\n",
			""},
		{"a PHP site's named rewrite of robots.txt before the gate's handle, from a file", "http://127.0.0.1:9 {\n\troot * /srv\n\tsigra_portal\n\t@robots path /robots.txt\n\trewrite @robots /robots-prod.txt\n\thandle /admin* {\n\t\tsigra_gate {\n\t\t\tgroup admins\n\t\t}\n\t\tphp_fastcgi 127.0.0.1:9000\n\t}\n\tphp_fastcgi 127.0.0.1:9000\n}\n",
			""},
		{"a gate in a handle_path beside a handle invoking another app, from a file", "&(web) {\n\treverse_proxy 127.0.0.1:3000\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\thandle_path /api/* {\n\t\tsigra_gate /admin/* {\n\t\t\tgroup admins\n\t\t}\n\t\treverse_proxy 127.0.0.1:9000\n\t}\n\thandle {\n\t\tinvoke web\n\t}\n}\n",
			""},
		{"an SPA's fallback in a handle beside the API's, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /api/* {\n\t\tgroup users\n\t}\n\thandle /api/* {\n\t\treverse_proxy 127.0.0.1:8080\n\t}\n\thandle {\n\t\troot * /srv/spa\n\t\ttry_files {path} {path}/ /index.html\n\t\tfile_server\n\t}\n}\n",
			""},
		// Ways round that the false-refusal fixes opened, from a review.
		{"a handle that rewrites and answers nothing, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle /x/* {\n\t\trewrite * /admin{uri}\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"rewrite on line 7 sends requests to /admin{http.request.uri}"},
		{"a handle_path that rewrites old URLs and answers nothing, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /old-admin/* {\n\t\trewrite * /admin{path}\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"handle_path on line 6 strips /old-admin after this gate"},
		{"a rewrite into a more specific handle than the one covering the gate, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /api/* {\n\t\tgroup users\n\t}\n\thandle /api/v2/* {\n\t\treverse_proxy 127.0.0.1:8081\n\t}\n\thandle /api/* {\n\t\treverse_proxy 127.0.0.1:8080\n\t}\n\thandle /legacy/* {\n\t\trewrite * /api/v2{uri}\n\t\treverse_proxy 127.0.0.1:8081\n\t}\n}\n",
			"rewrite on line 13 sends requests to /api/v2{http.request.uri}"},
		{"an exact handle beside a gate in a handle_path, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\thandle_path /app/* {\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\thandle /admin {\n\t\trespond 404\n\t}\n\thandle {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			"it is inside handle_path on line 3"},
		{"a rewrite then an invoke of a route to the same upstream, no port written, from a file", "&(app) {\n\treverse_proxy app.internal\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle /x/* {\n\t\trewrite * /admin{uri}\n\t\tinvoke app\n\t}\n\treverse_proxy app.internal\n}\n",
			"rewrite on line 10 sends requests to /admin{http.request.uri}"},
		{"a rewrite then a proxy to dynamic upstreams, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle /x/* {\n\t\trewrite * /admin{uri}\n\t\treverse_proxy {\n\t\t\tdynamic a app.internal 9\n\t\t}\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"rewrite on line 7 sends requests to /admin{http.request.uri}"},
		{"a strip_prefix in a handle for the prefix, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\thandle /app/* {\n\t\tsigra_gate /app/admin*\n\t\turi strip_prefix /app\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n", ""},
		{"a strip_prefix in a handle for another path, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\thandle /a* {\n\t\tsigra_gate /app/admin*\n\t\turi strip_prefix /app\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n", "for a request to /admin… itself, which it does not"},
		{"portal in handle /app/*, from a file", "http://127.0.0.1:9 {\n\thandle /app/* {\n\t\tsigra_portal\n\t\tsigra_gate\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n", "inside handle /app/* on line 2"},
		// A placeholder that takes a value the client sends may hold ../,
		// which a file server or the app resolves out of what is written
		// before it, from a review.
		{"a rewrite to a file named by the query, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\troot * /srv\n\trewrite /x/* /x/{query.file}\n\tfile_server\n}\n",
			"rewrite on line 7 sends requests to /x/{http.request.uri.query.file} (a placeholder there takes a value the client sends, not from the path, and ../ in it leads anywhere)"},
		{"a rewrite from a header, under a bare gate, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\trewrite * /x/{header.X-P}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"rewrite on line 7 sends requests to /x/{http.request.header.X-P}"},
		{"a try_files fallback from the query, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\troot * /srv\n\ttry_files {path} /x/{query.p}\n\tfile_server\n}\n",
			"try_files on line 7 sends requests to /x/{http.request.uri.query.p}"},
		{"a proxy's rewrite from the query, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\treverse_proxy 127.0.0.1:9 {\n\t\trewrite /x/{query.p}\n\t}\n}\n",
			"the rewrite in reverse_proxy on line 7 sends requests to /x/{http.request.uri.query.p}"},
		{"a rewrite to a capture of a header_regexp, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\t@t header_regexp t X-Tenant (.*)\n\trewrite @t /tenants/{re.t.1}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"sends requests to /tenants/{http.regexp.t.1}"},
		{"a rewrite gated alike on the paths it changes, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /x/* {\n\t\tgroup admins\n\t}\n\trewrite /x/* /x/{query.file}\n\treverse_proxy 127.0.0.1:9\n}\n", ""},
		{"the query in a rewrite's query, a capture of the path, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\t@v path_regexp v ^/v1/(.*)$\n\trewrite @v /api/{re.v.1}\n\trewrite /p/* /index.php?file={query.f}&p={path}\n\treverse_proxy 127.0.0.1:9\n}\n", ""},
		{"a rewrite from the environment, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\trewrite /x/* /x/{env.SIGRA_TEST_PREFIX}{path}\n\treverse_proxy 127.0.0.1:9\n}\n", ""},
		// uri strip_suffix makes /secret of /secret/, from a review.
		{"a strip_suffix after a gate on one path, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /secret {\n\t\tgroup admins\n\t}\n\tsigra_gate\n\turi strip_suffix /\n\treverse_proxy 127.0.0.1:9\n}\n",
			"uri strip_suffix on line 7 sends requests to /secret after this gate"},
		{"a strip_suffix with a matcher, after a gate on one path, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin {\n\t\tgroup admins\n\t}\n\turi /adm* strip_suffix .html\n\treverse_proxy 127.0.0.1:9\n}\n",
			"uri strip_suffix on line 6 sends requests to /admin after"},
		{"a strip_suffix after a gate on a path prefix, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate\n\turi strip_suffix .html\n\treverse_proxy 127.0.0.1:9\n}\n", ""},
		{"a strip_suffix under a bare gate asking as much, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /secret {\n\t\tgroup admins\n\t}\n\tsigra_gate {\n\t\tgroup admins\n\t}\n\turi strip_suffix /\n\treverse_proxy 127.0.0.1:9\n}\n", ""},
		{"a strip_suffix in an invoked named route, from a file", "&(app) {\n\troute {\n\t\turi strip_suffix /\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\tsigra_gate /secret {\n\t\tgroup admins\n\t}\n\tinvoke app\n}\n",
			"the strip_suffix in the named route app (invoked on line 13) sends requests to /secret after"},
		// A POST with _method=DELETE is a DELETE to most frameworks.
		{"a gate picked by DELETE alone, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\t@deletes method DELETE\n\troute @deletes {\n\t\tsigra_gate {\n\t\t\tgroup admins\n\t\t}\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"the matcher @deletes (line 4) picks requests by method (DELETE) and leaves out POST, while most web frameworks serve a POST with _method=DELETE"},
		{"a gate with a method matcher of its own in a block, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\t@writes {\n\t\tmethod PUT PATCH\n\t\tpath /items/*\n\t}\n\tsigra_gate @writes {\n\t\tmfa\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"the matcher @writes (line 4) picks requests by method (PUT PATCH)"},
		{"a gate picked by writes, POST among them, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\t@writes method POST PUT PATCH DELETE\n\tsigra_gate @writes {\n\t\tmfa\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n", ""},
		{"an optional gate picked by GET, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\t@reads method GET\n\tsigra_gate @reads {\n\t\toptional\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n", ""},
		// Ways round the checks above, from a review of them.
		{"a gate on a named path matcher, a rewrite from the query, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\t@adm path /admin*\n\tsigra_gate @adm {\n\t\tgroup admins\n\t}\n\troot * /srv\n\trewrite /x/* /x/{query.file}\n\tfile_server\n}\n",
			"rewrite on line 8 sends requests to /x/{http.request.uri.query.file}"},
		{"a gate on a named path matcher, a rewrite into it, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\t@adm path /admin*\n\tsigra_gate @adm {\n\t\tgroup admins\n\t}\n\trewrite /x/* /admin/panel\n\treverse_proxy 127.0.0.1:9\n}\n",
			"rewrite on line 7 sends requests to /admin/panel"},
		{"a strip_suffix in a handle_path with a gate on one path, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\thandle_path /app/* {\n\t\tsigra_gate /secret {\n\t\t\tgroup admins\n\t\t}\n\t\turi strip_suffix /\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\trespond 404\n}\n",
			"uri strip_suffix on line 7 sends requests to /secret"},
		{"a strip_suffix after a gate on a glob, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /reports/*.pdf {\n\t\tgroup admins\n\t}\n\turi strip_suffix .bak\n\treverse_proxy 127.0.0.1:9\n}\n",
			"it is on the path pattern /reports/*.pdf, and uri on line 6 may change the path after this gate"},
		{"a rewrite in another app's handle after a gate on a glob, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /reports/*.pdf {\n\t\tgroup admins\n\t}\n\thandle /blog/* {\n\t\trewrite * /blog/index.html\n\t\treverse_proxy 127.0.0.1:8081\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n", ""},
		{"a uri replace from the query, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\troot * /srv\n\turi replace /x/ /x/{query.p}/\n\tfile_server\n}\n",
			"uri replace on line 7 sends requests to /x/{http.request.uri.query.p}/ (a placeholder there takes a value the client sends"},
		{"a header_regexp capture in an invoked named route, from a file", "&(app) {\n\troute {\n\t\t@t header_regexp t X-Tenant (.*)\n\t\trewrite @t /tenants/{re.t.1}\n\t\troot * /srv\n\t\tfile_server\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tinvoke app\n}\n",
			"the rewrite in the named route app (invoked on line 14) sends requests to /tenants/{http.regexp.t.1}"},
		{"a path_regexp capture beside an unrelated header_regexp, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\t@mobile header_regexp ua User-Agent (?i)mobile\n\theader @mobile Vary User-Agent\n\t@v path_regexp v ^/v1/(.*)$\n\trewrite @v /api/{re.v.1}\n\treverse_proxy 127.0.0.1:9\n}\n", ""},
		{"a method matcher defined in a handle, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\thandle {\n\t\t@d method DELETE\n\t\tsigra_gate @d {\n\t\t\tgroup admins\n\t\t}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n",
			"the matcher @d (line 4) picks requests by method (DELETE) and leaves out POST"},
		{"a not method that leaves out POST, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\t@m not method GET HEAD POST\n\tsigra_gate @m {\n\t\tgroup admins\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"picks requests by method (not GET HEAD POST) and leaves out POST"},
		{"a not block that leaves out POST, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\t@m {\n\t\tnot {\n\t\t\tmethod GET HEAD POST\n\t\t}\n\t}\n\tsigra_gate @m {\n\t\tgroup admins\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"leaves out POST"},
		{"writes as not method GET HEAD, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\t@w not method GET HEAD\n\tsigra_gate @w {\n\t\tmfa\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n", ""},
		{"a vars matcher on the method, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\t@m vars {method} DELETE PUT\n\tsigra_gate @m {\n\t\tgroup admins\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"picks requests by method (DELETE PUT) and leaves out POST"},
		{"an expression on the method, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\t@np expression {method} != \"POST\"\n\tsigra_gate @np {\n\t\tgroup admins\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"looks at the method in a way that cannot be read"},
		{"an expression on the method with POST in a path, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\t@del `{method} == 'DELETE' && path('/posts/*')`\n\tsigra_gate @del {\n\t\tgroup admins\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"looks at the method in a way that cannot be read"},
		{"a method gate whose POSTs meet a gate asking more, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\t@reads method GET HEAD\n\tsigra_gate @reads {\n\t\tgroup staff\n\t}\n\tsigra_gate {\n\t\tgroup staff\n\t\tmfa\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n", ""},
		{"a method directive after a method gate, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\t@writes method POST PUT PATCH DELETE\n\tsigra_gate @writes {\n\t\tgroup admins\n\t}\n\t@override header X-HTTP-Method-Override *\n\tmethod @override {header.X-HTTP-Method-Override}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"the method directive on line 8 changes the method after it"},
		// More ways round, from a second review of them.
		{"a gate on a path and not a client address, a strip after it, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\t@admin {\n\t\tpath /admin*\n\t\tnot remote_ip 10.0.0.0/8\n\t}\n\tsigra_gate @admin {\n\t\tgroup admins\n\t}\n\turi strip_prefix /app\n\treverse_proxy 127.0.0.1:9\n}\n",
			"uri strip_prefix on line 10 strips /app after this gate"},
		{"a gate on a path and the writes, a rewrite into it, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\t@admw {\n\t\tpath /admin*\n\t\tmethod POST PUT PATCH DELETE\n\t}\n\tsigra_gate @admw {\n\t\tgroup admins\n\t}\n\trewrite /x/* /admin{path}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"rewrite on line 10 sends requests to /admin{http.request.uri.path}"},
		{"a gate on not path, a rewrite from the query, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\t@private not path /public/*\n\tsigra_gate @private {\n\t\tgroup staff\n\t}\n\troot * /srv\n\trewrite /public/dl /public/files/{query.f}\n\tfile_server\n}\n",
			"its matcher picks paths in a way that cannot be read (a path_regexp, a not path, an expression), and rewrite on line 8"},
		{"a gate on a path_regexp, a rewrite after it, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\t@adm path_regexp ^/admin\n\tsigra_gate @adm {\n\t\tgroup admins\n\t}\n\trewrite /x/* /admin{path}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"its matcher picks paths in a way that cannot be read"},
		{"a bare gate in a handle on a matcher defined in a handle, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\thandle {\n\t\t@adm {\n\t\t\tpath /admin*\n\t\t\tmethod GET POST\n\t\t}\n\t\thandle @adm {\n\t\t\tsigra_gate {\n\t\t\t\tgroup admins\n\t\t\t}\n\t\t\treverse_proxy 127.0.0.1:9\n\t\t}\n\t\thandle_path /app/* {\n\t\t\treverse_proxy 127.0.0.1:9\n\t\t}\n\t}\n}\n",
			"handle_path"},
		{"writes gated beside an SPA's fallback, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\t@writes method POST PUT PATCH DELETE\n\tsigra_gate @writes {\n\t\tmfa\n\t}\n\troot * /srv\n\ttry_files {path} /index.html\n\tfile_server\n}\n", ""},
		{"a try_files of {path}.html after a gate on one page, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /report.html {\n\t\tgroup finance\n\t}\n\troot * /srv\n\ttry_files {path} {path}.html\n\tfile_server\n}\n",
			"try_files on line 7 sends requests to {http.request.uri.path}.html"},
		{"a try_files of {path}.html after gates on the page with and without it, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /report.html {\n\t\tgroup finance\n\t}\n\tsigra_gate /report {\n\t\tgroup finance\n\t}\n\troot * /srv\n\ttry_files {path} {path}.html\n\tfile_server\n}\n", ""},
		{"a header_regexp capture in an expression, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\troot * /srv\n\t@m expression header_regexp('m', 'X-File', '^(.+)$')\n\trewrite @m /files/{re.m.1}\n\tfile_server\n}\n",
			"sends requests to /files/{http.regexp.m.1}"},
		{"a not method block, named in the refusal by what it takes, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\t@del {\n\t\tnot {\n\t\t\tmethod GET HEAD POST\n\t\t}\n\t}\n\tsigra_gate @del {\n\t\tgroup admins\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"with _method=DELETE"},
		{"a handle_path that answers nothing, the site's proxy after it, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /app/* {\n\t\trequest_header X-Forwarded-Prefix /app\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
			"handle_path on line 6 strips /app after this gate, which sees /app/admin… where the app will see /admin…"},
		{"a handle_path that answers all with another app, from a file", "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\thandle_path /old/* {\n\t\trespond 410\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n", ""},
		{"an invoke by DELETE of a route holding a gate, from a file", "&(admin-gate) {\n\troute {\n\t\tsigra_gate {\n\t\t\tgroup admins\n\t\t}\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\t@del method DELETE\n\tinvoke @del admin-gate\n\treverse_proxy 127.0.0.1:9\n}\n",
			"invoke on line 12 runs the named route admin-gate, which holds a sigra_gate, only for the matcher @del (line 11), which picks requests by method (DELETE) and leaves out POST"},
		// A matcher from a placeholder is a matcher, whatever it holds.
		{"handle with an env matcher, gate ordered after it, from a file", "{\n\torder sigra_gate after handle\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\thandle {$SIGRA_TEST_UNSET:/api/*} {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\tsigra_gate\n\treverse_proxy 127.0.0.1:9\n}\n", ""},
		// Caddy leaves the last token twice where it took a matcher out;
		// an argument written twice is no matcher taken out.
		{"reverse_proxy with one upstream written twice, gate ordered after it, from a file", "{\n\torder sigra_gate after reverse_proxy\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\treverse_proxy 127.0.0.1:9 127.0.0.1:9\n}\n",
			"the global order option runs reverse_proxy (line 7) before sigra_gate"},
		{"handle *, gate ordered after it, from a file", "{\n\torder sigra_gate after handle\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\thandle * {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\tsigra_gate\n}\n", "runs handle (line 6) before sigra_gate"},
	} {
		t.Run(fc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "Caddyfile")
			src := fc.src
			if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": path})
			checkAdapted(t, src, err, fc.wantErr)
		})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(global, "%s", tc.order, 1) + "http://127.0.0.1:9 {\n" + tc.site + "}\n"
			checkAdapted(t, src, adaptCaddyfile(src), tc.wantErr...)
		})
	}
}

// checkAdapted checks the outcome err of adapting src: none if want is
// empty, else an error holding every string of want.
func checkAdapted(t *testing.T, src string, err error, want ...string) {
	t.Helper()
	want = slices.DeleteFunc(want, func(w string) bool { return w == "" })
	switch {
	case len(want) == 0 && err != nil:
		t.Fatalf("adapt: %v\n%s", err, src)
	case len(want) > 0 && err == nil:
		t.Fatalf("adapted; want an error with %q\n%s", want, src)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("adapt error %q; want it to contain %q\n%s", err, w, src)
		}
	}
}

// caddyOrder is Caddy's order: each directive written at a site's top
// level, last first, each on a path of its own, comes out in the
// adapted routes in caddyOrder's order.
func TestCaddyOrder(t *testing.T) {
	args := map[string]string{
		"sigra_gate": "", "redir": "/new", "rewrite": "/new", "uri": "replace /a /b", "try_files": "{path} /index.html", "basic_auth": "{\n\t\tu $2a$14$Zkx19XLiW6VYouLHR5NmfOFU0z2GTNmpkT/5qqR7hx4IjWJPDhjvG\n\t}", "forward_auth": "127.0.0.1:9 {\n\t\turi /auth\n\t}",
		"invoke": "r", "handle": "{\n\t\trespond h\n\t}", "handle_path": "{\n\t\trespond hp\n\t}", "route": "{\n\t\trespond r\n\t}",
		"abort": "", "error": "500", "respond": "ok", "metrics": "", "reverse_proxy": "127.0.0.1:9", "php_fastcgi": "127.0.0.1:9", "file_server": "", "acme_server": "",
	}
	var site strings.Builder
	for i := len(caddyOrder) - 1; i >= 0; i-- {
		d := caddyOrder[i]
		if d == "sigra_portal" || d == "handle_path" { // no matcher; sorted as handle
			continue
		}
		a, ok := args[d]
		if !ok {
			t.Fatalf("no arguments for %s", d)
		}
		fmt.Fprintf(&site, "\t%s /d%02d %s\n", d, i, a)
	}
	src := "&(r) {\n\trespond named\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n" + site.String() + "}\n"
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil)
	if err != nil {
		t.Fatalf("adapt: %v\n%s", err, src)
	}
	var got []string
	// try_files takes no matcher: its first file marks it.
	for _, m := range regexp.MustCompile(`"path":\["/d(\d\d)"\]|"try_files":\["/d(\d\d)"`).FindAllStringSubmatch(string(out), -1) {
		if m[1] == "" {
			m[1] = m[2]
		}
		n, _ := strconv.Atoi(m[1])
		got = append(got, caddyOrder[n])
	}
	want := slices.DeleteFunc(slices.Clone(caddyOrder), func(d string) bool { return d == "sigra_portal" || d == "handle_path" })
	if !slices.Equal(got, want) {
		t.Errorf("Caddy's order of the directives: %q; caddyOrder says %q", got, want)
	}
}

// A directive from an imported file is named with its file.
func TestPlacementNamesAnImportedFile(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "app.caddy")
	if err := os.WriteFile(sub, []byte("handle {\n\treverse_proxy 127.0.0.1:9\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "Caddyfile")
	src := "http://127.0.0.1:9 {\n\tsigra_portal\n\timport app.caddy\n\troute {\n\t\tsigra_gate\n\t}\n}\n"
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": path})
	checkAdapted(t, src, err, "handle on "+sub+":1 runs before the route block on line 4 that holds it")
}

// Named routes that each invoke the next twice make a chain whose paths
// double at every step: what each route does is worked out once, so
// adapting it takes no longer than the routes are many (walked path by
// path, 22 routes took 50 s and 10 GB).
func TestPlacementNamedRouteChain(t *testing.T) {
	const n = 22
	var b strings.Builder
	for i := range n {
		if i == n-1 {
			// what each route takes in from the ones it invokes (its
			// upstreams, its changes of the path) must not double either
			fmt.Fprintf(&b, "&(r%d) {\n\troute {\n\t\trewrite * /x{uri}\n\t\treverse_proxy 127.0.0.1:9\n\t}\n}\n", i)
			continue
		}
		fmt.Fprintf(&b, "&(r%d) {\n\troute {\n\t\tinvoke r%d\n\t\tinvoke r%d\n\t}\n}\n", i, i+1, i+1)
	}
	b.WriteString("http://127.0.0.1:9 {\n\tsigra_portal\n\troute {\n\t\tinvoke r0\n\t\tsigra_gate\n\t}\n}\n")
	src := b.String()
	path := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": path})
		done <- err
	}()
	select {
	case err := <-done:
		// r0 answers every request (through the chain, respond x), and
		// runs before the gate.
		checkAdapted(t, src, err, "invoke on line", "comes first in this route block")
	case <-time.After(30 * time.Second):
		t.Fatal("adapting a chain of 22 named routes did not finish in 30 s")
	}
}

// A PHP site's path gate is warned of, not refused: Laravel and Symfony
// route /index.php/admin/… as /admin/…, past it, while WordPress serves
// its admin pages as files and routes nothing so.
func TestPlacementWarnsOfThePHPSplit(t *testing.T) {
	var warned []string
	defer func(f func(string)) { placementWarning = f }(placementWarning)
	placementWarning = func(msg string) { warned = append(warned, msg) }
	const site = "http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n%s\troot * /srv\n\tphp_fastcgi 127.0.0.1:9000\n}\n"
	for _, c := range []struct {
		name, more string
		warns      bool
	}{
		{"a path gate alone", "", true},
		{"the split path gated alike", "\tsigra_gate /index.php/admin* {\n\t\tgroup admins\n\t}\n", false},
		{"the split path refused", "\trespond /index.php/* 404\n", false},
		{"the split path gated with less", "\tsigra_gate /index.php/admin*\n", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			warned = nil
			src := fmt.Sprintf(site, c.more)
			checkAdapted(t, src, adaptCaddyfile(src))
			if got := len(warned) > 0; got != c.warns {
				t.Fatalf("warnings %q; want some: %t", warned, c.warns)
			}
			if strings.HasPrefix(c.name, "not path") && len(warned) > 1 {
				t.Errorf("warnings %q; want one, saying what to write instead", warned)
			}
			if c.warns && !strings.Contains(warned[0], "sigra_gate /admin* on line 3: this is a PHP site (php_fastcgi, front controller index.php)") {
				t.Errorf("warning %q; want it to name the gate, its line and the front controller", warned[0])
			}
		})
	}
}

// A gate picked by a matcher that heeds case (path_regexp, an expression
// on the path) is warned of: Caddy's path matcher, and many apps, do
// not, so /ADMIN/x would miss it and meet only the gates beside it. So is
// one picked by path() in an expression, which never decides alone.
func TestCaseSensitiveGateMatcherIsWarnedOf(t *testing.T) {
	var warned []string
	defer func(f func(string)) { placementWarning = f }(placementWarning)
	placementWarning = func(msg string) { warned = append(warned, msg) }
	for _, c := range []struct {
		name, matcher, reqs string
		warns               bool
	}{
		{"path_regexp", "@adm path_regexp ^/admin", "group admins", true},
		{"path_regexp with (?i)", "@adm path_regexp (?i)^/admin", "group admins", true}, // never decides alone
		{"path", "@adm path /admin* /ops*", "group admins", false},
		{"expression on {path}", "@adm expression {path}.startsWith('/admin')", "group admins", true},
		{"expression with path()", "@adm expression path('/admin*')", "group admins", true},
		{"optional expression with path()", "@adm expression path('/feed*')", "optional", true},
		{"path", "@adm path /admin*", "group admins", false},
		{"optional path_regexp", "@adm path_regexp ^/feed", "optional", false},
		{"not path", "@adm not path /public/*", "group admins", true},
		{"not path_regexp", "@adm not path_regexp ^/public/", "group admins", true},
		{"not path beside path", "@adm {\n\t\tpath /admin*\n\t\tnot path /admin/help*\n\t}", "group admins", false},
		{"suffix path", "@adm path *.css", "optional", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			warned = nil
			src := fmt.Sprintf("http://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\t%s\n\tsigra_gate @adm {\n\t\t%s\n\t}\n\trespond ok\n}\n", c.matcher, c.reqs)
			checkAdapted(t, src, adaptCaddyfile(src))
			if got := len(warned) > 0; got != c.warns {
				t.Fatalf("warnings %q; want some: %t", warned, c.warns)
			}
			if strings.HasPrefix(c.name, "not path") && len(warned) > 1 {
				t.Errorf("warnings %q; want one, saying what to write instead", warned)
			}
			if c.warns && !strings.Contains(warned[0], "sigra_gate on line 5: it") && !strings.Contains(warned[0], "never decides alone") {
				t.Errorf("warning %q; want it to name the gate's line", warned[0])
			}
		})
	}
}

// A block whose matcher cannot be read back (written before the portal
// in a Caddyfile on stdin: Caddy took the matcher out of the tokens, and
// no file holds it) is warned of: a loose spelling of its paths is not
// refused. Written after the portal, its tokens are still whole.
func TestUnreadBlockMatcherIsWarnedOf(t *testing.T) {
	var warned []string
	defer func(f func(string)) { placementWarning = f }(placementWarning)
	placementWarning = func(msg string) { warned = append(warned, msg) }
	src := "http://127.0.0.1:9 {\n\thandle /admin/* {\n\t\tsigra_gate {\n\t\t\tgroup staff\n\t\t}\n\t}\n\tsigra_portal\n\trespond ok\n}\n"
	if err := adaptCaddyfile(src); err != nil { // "Testfile": no such file
		t.Fatal(err)
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "sigra_portal on line 7: the matcher of the handle on line 2 could not be read back") {
		t.Errorf("warnings %q; want one naming the handle on line 2", warned)
	}
	warned = nil
	after := "http://127.0.0.1:9 {\n\tsigra_portal\n\thandle /admin/* {\n\t\tsigra_gate {\n\t\t\tgroup staff\n\t\t}\n\t}\n\trespond ok\n}\n"
	if err := adaptCaddyfile(after); err != nil {
		t.Fatal(err)
	}
	if len(warned) != 0 {
		t.Errorf("warnings %q with the handle after the portal; want none", warned)
	}
	// Matchers that pick by path in ways not read: an expression, vars.
	// And a path_regexp that heeds case, around a gate.
	for m, want := range map[string]string{
		"@adm expression path('/admin/*')":               "the matcher of the handle on line 4 has a matcher (expression)",
		"@adm vars {section} admin":                      "the matcher of the handle on line 4 has a matcher (vars)",
		"@adm path_regexp ^/Admin/":                      "the path_regexp of the handle on line 4 compares the path with regard to case",
		"@adm {\n\t\tpath /admin/*\n\t\tmethod GET\n\t}": "",
		"@adm path_regexp (?i)^/admin/":                  "",
	} {
		warned = nil
		src := "http://127.0.0.1:9 {\n\tsigra_portal\n\t" + m + "\n\thandle @adm {\n\t\tsigra_gate {\n\t\t\tgroup staff\n\t\t}\n\t}\n\trespond ok\n}\n"
		if err := adaptCaddyfile(src); err != nil {
			t.Fatal(err)
		}
		switch {
		case want == "" && len(warned) > 0:
			t.Errorf("%s: warnings %q; want none", m, warned)
		case want != "" && (len(warned) != 1 || !strings.Contains(warned[0], want)):
			t.Errorf("%s: warnings %q; want one saying %q", m, warned, want)
		}
	}
	warned = nil
	file := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": file}); err != nil {
		t.Fatal(err)
	}
	if len(warned) != 0 {
		t.Errorf("warnings %q with the file on disk; want none", warned)
	}
}

// A path pattern that some apps read as another spelling is warned of,
// on a gate or on a block around one, naming the other spelling.
func TestLoosePatternIsWarnedOf(t *testing.T) {
	var warned []string
	defer func(f func(string)) { placementWarning = f }(placementWarning)
	placementWarning = func(msg string) { warned = append(warned, msg) }
	for _, c := range []struct {
		name, site, want string
	}{
		{"gate", "\tsigra_gate\n\tsigra_gate /ｶﾀﾛｸﾞ/* {\n\t\tgroup staff\n\t}", "sigra_gate on line 4: the path pattern /ｶﾀﾛｸﾞ/* is a spelling that some apps read as /カタログ/*"},
		{"not", "\t@pub not path /wiki/Washington,_D.C.\n\tsigra_gate @pub {\n\t\toptional\n\t}\n\tsigra_gate", "the path pattern /wiki/Washington,_D.C. is a spelling that some apps read as /wiki/Washington,_D.C"},
		{"block", "\thandle /docs./* {\n\t\tsigra_gate {\n\t\t\tgroup staff\n\t\t}\n\t}\n\tsigra_gate", "sigra_portal on line 2: the path pattern /docs./* is a spelling that some apps read as /docs/*"},
		{"regexp", "\t@k path_regexp ^/ｶﾀﾛｸﾞ/\n\tsigra_gate @k {\n\t\tgroup staff\n\t}\n\tsigra_gate", "the path_regexp ^/ｶﾀﾛｸﾞ/ spells paths that some apps read as ^/カタログ/"},
		{"none", "\tsigra_gate\n\tsigra_gate /docs/* {\n\t\toptional\n\t}", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			warned = nil
			src := fmt.Sprintf("http://127.0.0.1:9 {\n\tsigra_portal\n%s\n\trespond ok\n}\n", c.site)
			checkAdapted(t, src, adaptCaddyfile(src))
			var loose []string
			for _, w := range warned {
				if strings.Contains(w, "some apps read as") {
					loose = append(loose, w)
				}
			}
			if c.want == "" && len(loose) > 0 || c.want != "" && (len(loose) != 1 || !strings.Contains(loose[0], c.want)) {
				t.Errorf("warnings %q; want one with %q", loose, c.want)
			}
		})
	}
}

// Upstreams are compared as Caddy would dial them: one spelling of a
// host is not another app.
func TestUpstreamKey(t *testing.T) {
	for _, same := range [][]string{
		{"127.0.0.1:9", "localhost:9", "http://localhost:9", "[::1]:9", "[0:0::1]:9", "[::ffff:127.0.0.1]:9", "127.0.0.2:9", "127.1.2.3:9", "0.0.0.0:9", "[::]:9", "LOCALHOST:9", "localhost.:9"},
		{"10.0.0.5:80", "10.0.0.5", "http://10.0.0.5", "[::ffff:10.0.0.5]:80", "[::ffff:a00:5]:80"},
		{"[2001:db8::1]:8080", "[2001:DB8:0::1]:8080", "h2c://[2001:db8:0:0::1]:8080"},
		{"app.internal:443", "https://app.internal", "APP.internal:443", "app.internal.:443"},
	} {
		for _, u := range same[1:] {
			if got, want := upstreamKey(u), upstreamKey(same[0]); got != want {
				t.Errorf("upstreamKey(%q) = %q; want %q, as for %q", u, got, want, same[0])
			}
		}
	}
	for _, pair := range [][2]string{{"127.0.0.1:9", "127.0.0.1:10"}, {"10.0.0.5:80", "10.0.0.6:80"}, {"app.internal:80", "app.internal:443"}, {"10.0.0.5:443", "https://10.0.0.5:80"}} {
		if upstreamKey(pair[0]) == upstreamKey(pair[1]) {
			t.Errorf("upstreamKey(%q) = upstreamKey(%q); want them apart", pair[0], pair[1])
		}
	}
}
