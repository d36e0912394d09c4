// Command demoapp is the "unmodified application" of the Sigra demo: it
// knows nothing about sign-in and only reads the identity headers the
// gateway sends. It also shows how an upstream verifies the signed
// assertion (X-Sigra-Assertion) against the gateway's JWKS with go-jose.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:3000", "address to serve on")
	origin := flag.String("origin", "http://localhost:8080", "the gateway's site origin: the assertion's iss and aud")
	jwksURL := flag.String("jwks", "", "the gateway's JWKS (default: <origin>/.sigra/jwks.json)")
	needFree := flag.String("need-free", "", "comma-separated addresses the gateway will listen on (\":8080,localhost:2019\"): refuse to start if one is taken")
	ready := flag.String("ready", "", "a file to create once the app is listening")
	flag.Parse()
	// Caddy shares a port another Caddy holds (SO_REUSEPORT) without a
	// word, and requests then go to either: a demo beside another Caddy
	// would answer at random. A plain listen on the port is refused if
	// anything holds it.
	for _, addr := range strings.Split(*needFree, ",") {
		if addr == "" {
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			log.Fatalf("%s is taken (%v): stop what listens there (another Caddy, or an earlier demo) and start again", addr, err)
		}
		l.Close()
	}
	// Listen before saying so, and before the gateway starts: if the port
	// is taken, the gateway must not send signed-in users' identity to
	// whatever holds it.
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("the demo app cannot listen on %s (%v): stop what listens there and start again", *listen, err)
	}
	if *ready != "" {
		if err := os.WriteFile(*ready, nil, 0o600); err != nil {
			log.Fatal(err)
		}
	}
	if *jwksURL == "" {
		*jwksURL = *origin + "/.sigra/jwks.json"
	}
	v := &verifier{url: *jwksURL, origin: *origin}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		var hdrs [][2]string
		for k, vals := range r.Header {
			if strings.HasPrefix(k, "X-Sigra-") && k != "X-Sigra-Assertion" {
				hdrs = append(hdrs, [2]string{k, strings.Join(vals, ", ")})
			}
		}
		sort.Slice(hdrs, func(i, j int) bool { return hdrs[i][0] < hdrs[j][0] })
		claims, verr := v.verify(r.Context(), r.Header.Get("X-Sigra-Assertion"))
		var claimsJSON string
		if claims != nil {
			b, _ := json.MarshalIndent(claims, "", "  ")
			claimsJSON = string(b)
		}
		errText := ""
		if verr != nil {
			errText = verr.Error()
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = page.Execute(w, map[string]any{"Path": r.URL.Path, "Headers": hdrs, "Claims": claimsJSON, "Err": errText})
	})
	log.Printf("demo app on http://%s (behind the gateway: %s)", *listen, *origin)
	log.Fatal(http.Serve(ln, nil))
}

// verifier checks assertions against the JWKS, refetching it when a kid
// is unknown (key rotation) or the set is older than keysMaxAge.
type verifier struct {
	url     string
	origin  string // iss and aud: the assertion must be for this site
	mu      sync.Mutex
	keys    jose.JSONWebKeySet
	fetched time.Time
	now     func() time.Time // time.Now; tests move it
}

// keysMaxAge bounds how long a fetched key set is trusted: a key the
// gateway stopped publishing (retired, or rotated away because it
// leaked) stops verifying here within it. An unknown kid is fetched at
// once: a new key signs as soon as the gateway makes it.
const keysMaxAge = 5 * time.Minute

func (v *verifier) verify(ctx context.Context, token string) (map[string]any, error) {
	if token == "" {
		return nil, errors.New("no assertion (anonymous request)")
	}
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
	if err != nil {
		return nil, err
	}
	kid := tok.Headers[0].KeyID
	key, err := v.key(ctx, kid)
	if err != nil {
		return nil, err
	}
	var std jwt.Claims
	var all map[string]any
	if err := tok.Claims(key, &std, &all); err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	// An assertion signed for another site (another iss or aud) is not
	// for this app, even with a good signature.
	want := jwt.Expected{Issuer: v.origin, AnyAudience: jwt.Audience{v.origin}, Time: time.Now()}
	if err := std.ValidateWithLeeway(want, 30*time.Second); err != nil {
		return nil, err
	}
	return all, nil
}

func (v *verifier) key(ctx context.Context, kid string) (any, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := time.Now
	if v.now != nil {
		now = v.now
	}
	if ks := v.keys.Key(kid); len(ks) > 0 && now().Sub(v.fetched) < keysMaxAge {
		return ks[0].Key, nil
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, v.url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching JWKS: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	v.keys, v.fetched = set, now()
	if ks := v.keys.Key(kid); len(ks) > 0 {
		return ks[0].Key, nil
	}
	return nil, fmt.Errorf("no key %q in the JWKS", kid)
}

var page = template.Must(template.New("p").Parse(`<!doctype html><meta charset="utf-8"><title>Demo app</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}td{padding:.2rem .8rem .2rem 0;vertical-align:top}code,pre{font-family:ui-monospace,monospace}pre{background:#f3f4f6;padding:1rem;overflow:auto}</style>
<h1>An unmodified app</h1>
<p>This page is served by the demo app behind the Sigra gateway. It saw these identity headers for <code>{{.Path}}</code>:</p>
<table>{{range .Headers}}<tr><td><code>{{index . 0}}</code></td><td><code>{{index . 1}}</code></td></tr>{{else}}<tr><td>none: anonymous</td></tr>{{end}}</table>
{{if .Claims}}<h2>Assertion verified ✓</h2><p>X-Sigra-Assertion checked against the gateway's JWKS:</p><pre>{{.Claims}}</pre>
{{else}}<p>Assertion: {{.Err}}</p>{{end}}
<p><a href="/public/">/public/</a> (sign-in optional) · <a href="/admin/">/admin/</a> (group admins) · <a href="/secure/">/secure/</a> (second factor) · <a href="/.sigra/account">account</a> · <a href="/.sigra/logout">sign out</a></p>`))
