package caddymodule

import (
	"bytes"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/sigra-auth/caddy-sigra/audit"
)

//go:embed templates/*.html
var templateFS embed.FS

// pageNames are the portal pages; each is templates/<name>.html defining
// "content", rendered inside templates/layout.html.
var pageNames = []string{"login", "logout", "message", "account", "password", "delete", "mfa", "totp", "admin", "admin_users", "admin_user", "admin_audit"}

var pages = func() map[string]*template.Template {
	m := make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		files := []string{"templates/layout.html", "templates/" + name + ".html"}
		if strings.HasPrefix(name, "admin") {
			files = append(files, "templates/admin_nav.html")
		}
		m[name] = template.Must(template.New(name).Funcs(pageFuncs).ParseFS(templateFS, files...))
	}
	return m
}()

// pageFuncs are the template helpers.
var pageFuncs = template.FuncMap{
	// datetime formats a time for a datetime attribute.
	"datetime": func(t time.Time) string { return t.UTC().Format(audit.TimeLayout) },
	// when formats a time for people, to the second.
	"when": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") },
}

// pageData is what every page template receives.
type pageData struct {
	Title  string
	Nonce  string
	Prefix string
	CSRF   string
	RD     string
	Wide   bool
	Error  string
	Email  string
	// message page
	Message string
	Link    string
	// account page
	User           any
	Sessions       any
	MoreSessions   int // not listed
	CurrentSession string
	IsAdmin        bool // links the admin pages
	// TOTP pages
	Codes     []string
	Enrolled  bool
	CodesLeft int
	CodeSet   string // names the codes left (new ones replace them): codeSetBinding
	QR        template.URL
	Secret    string
	URI       string
	Enrolment string // names the enrolment shown, for its form (authcore.TOTPEnrolment.Page)
	// MinPassword is the shortest new password (authcore.MinPasswordLen).
	MinPassword int
	// Admin is what the admin pages show (adminData).
	Admin adminData
}

// newNonce returns a per-response CSP nonce.
func newNonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawStdEncoding.EncodeToString(b[:])
}

// setPageHeaders sets the headers every portal response carries.
func setPageHeaders(h http.Header, nonce string, formTargets []string) {
	csp := "default-src 'none'; style-src 'nonce-" + nonce + "'; script-src 'nonce-" + nonce + "'; img-src 'self' data:; " +
		"form-action 'self'" + strings.Join(formTargets, "") + "; frame-ancestors 'none'; base-uri 'none'"
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// renderPage writes a page with status. Rendering goes to a buffer first
// so a template error never leaves half a page.
func renderPage(w http.ResponseWriter, status int, name string, d pageData) error {
	var buf bytes.Buffer
	if err := pages[name].ExecuteTemplate(&buf, "layout", d); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, err := w.Write(buf.Bytes())
	return err
}
