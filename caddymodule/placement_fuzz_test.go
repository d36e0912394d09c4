package caddymodule

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// placementLines are the lines FuzzAdaptPlacement builds sites from: the
// directives the placement checks read (gates, the portal, rewrites,
// strips, blocks, invokes, imports, proxies), with the matchers they
// take. "}" closes the innermost open block.
var placementLines = []string{
	"sigra_portal",
	"sigra_gate",
	"sigra_gate /admin* {\ngroup admins\n}",
	"sigra_gate /app/admin* {\nmfa\n}",
	"sigra_gate @adm {\noptional\n}",
	"reverse_proxy 127.0.0.1:9",
	"reverse_proxy 127.0.0.1:8 127.0.0.1:8",
	"reverse_proxy {\nto 127.0.0.1:9\nrewrite /admin\n}",
	"uri strip_prefix /app",
	"uri strip_prefix /app/",
	"uri replace /x /admin",
	"uri path_regexp ^/(.*) /admin/$1",
	"rewrite /old/* /admin{uri}",
	"rewrite * /admin",
	"try_files {path} /admin/index.php",
	"try_files {path}/",
	"handle /app/* {",
	"handle_path /app/* {",
	"handle /admin {",
	"route /admin* {",
	"handle {",
	"route {",
	"handle_errors {",
	"}",
	"}",
	"respond ok",
	"file_server",
	"invoke r1",
	"invoke /x* r1",
	"import snip /admin*",
	"import snip",
	"php_fastcgi 127.0.0.1:9000",
	"rewrite @re /admin{re.1}",
	"uri strip_prefix /Ⱥ",
	"redir /a /admin",
	"header X-A b",
	"reverse_proxy {http.request.header.X-Up}",
}

// placementSite builds a Caddyfile from prog, one byte per line of
// placementLines, blocks closed at the end. The first byte picks what the
// named route r1 holds; the next, whether the site has the portal at its
// top and the gate is ordered after the proxy. The site's named matchers
// are defined at its top.
func placementSite(prog []byte) string {
	var b strings.Builder
	b.WriteString("{\n\tsigra {\n\t\tstorage bbolt /tmp/never-opened.db\n\t}\n")
	if len(prog) > 1 && prog[1]%4 == 0 { // the gate after the proxy: the checks must say so
		b.WriteString("\torder sigra_gate after reverse_proxy\n")
	}
	b.WriteString("}\n")
	b.WriteString("(snip) {\n\tsigra_gate {args[0]} {\n\t\tgroup admins\n\t}\n}\n")
	route := "reverse_proxy 127.0.0.1:9"
	if len(prog) > 0 {
		route = placementLines[int(prog[0])%len(placementLines)]
		prog = prog[1:]
	}
	if route == "}" || strings.HasSuffix(route, "{") {
		route = "respond r1"
	}
	b.WriteString("&(r1) {\n\troute {\n" + route + "\n\t}\n}\n")
	b.WriteString("http://127.0.0.1:9 {\n@adm path /admin/* /settings*\n@re path_regexp ^/a(.*)$\n@lower path /Ⱥ*\n")
	if len(prog) == 0 || prog[0]%8 != 0 { // mostly with the portal: without it, every gate is refused
		b.WriteString("sigra_portal\n")
	}
	depth := 0
	for i, c := range prog {
		if i == 48 {
			break
		}
		line := placementLines[int(c)%len(placementLines)]
		switch {
		case line == "}" && depth == 0:
			continue
		case line == "}":
			depth--
		case strings.HasSuffix(line, "{"):
			depth++
		}
		b.WriteString(line + "\n")
	}
	b.WriteString(strings.Repeat("}\n", depth))
	b.WriteString("}\n")
	return b.String()
}

// FuzzAdaptPlacement: any site built from the directives the placement
// checks read adapts or is refused with an error; it never panics. Half
// the inputs are adapted from a file, where the checks read matchers
// back from it, half from a name that cannot be read.
func FuzzAdaptPlacement(f *testing.F) {
	for _, seed := range [][]byte{
		{6, 0, 2, 9, 6},
		{6, 0, 19, 2, 25, 9, 6, 25},
		{6, 0, 1, 18, 2, 6, 25, 22, 16, 25},
		{29, 0, 5, 4, 13, 33},
		{30, 0, 31, 36, 37, 6},
		{15, 0, 2, 40, 6, 41},
	} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	f.Fuzz(func(t *testing.T, prog []byte, fromFile bool) {
		src := placementSite(prog)
		name := "Testfile"
		if fromFile {
			name = filepath.Join(t.TempDir(), "Caddyfile")
			if err := os.WriteFile(name, []byte(src), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		_, _, _ = caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": name})
	})
}
