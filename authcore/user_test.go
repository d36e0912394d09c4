package authcore

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestNormalizeEmail(t *testing.T) {
	// 64 + 1 + 189 = 254 bytes, the longest address accepted.
	longest := strings.Repeat("a", 64) + "@" + strings.Repeat("b", 185) + ".com"
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr bool
	}{
		{name: "plain", in: "alice@example.com", want: "alice@example.com"},
		{name: "upper case folded", in: "Alice@Example.COM", want: "alice@example.com"},
		{name: "surrounding spaces trimmed", in: "  alice@example.com \t\n", want: "alice@example.com"},
		{name: "plus tag and subdomain", in: "a.b+tag@mail.example.co.uk", want: "a.b+tag@mail.example.co.uk"},
		{name: "254 bytes", in: longest, want: longest},
		{name: "empty", in: "", wantErr: true},
		{name: "only spaces", in: "   ", wantErr: true},
		{name: "display name", in: "Alice <alice@example.com>", wantErr: true},
		{name: "quoted display name", in: `"Alice" <alice@example.com>`, wantErr: true},
		{name: "angle brackets only", in: "<alice@example.com>", wantErr: true},
		{name: "comment", in: "alice@example.com (Alice)", wantErr: true},
		{name: "missing @", in: "alice.example.com", wantErr: true},
		{name: "missing local part", in: "@example.com", wantErr: true},
		{name: "missing domain", in: "alice@", wantErr: true},
		{name: "two @", in: "alice@bob@example.com", wantErr: true},
		{name: "list of two", in: "alice@example.com, bob@example.com", wantErr: true},
		{name: "space inside", in: "alice smith@example.com", wantErr: true},
		{name: "quoted local part", in: `"alice smith"@example.com`, wantErr: true},
		{name: "header injection", in: "alice@example.com\r\nX-Sigra-User: admin", wantErr: true},
		{name: "NUL", in: "alice\x00@example.com", wantErr: true},
		{name: "not UTF-8", in: "x\xff@example.com", wantErr: true},
		// Invisible or terminal-active characters would make an address
		// look like another, or act on a terminal printing it.
		{name: "zero-width space", in: "ad\u200bmin@example.com", wantErr: true},
		{name: "right-to-left override", in: "a\u202eb@example.com", wantErr: true},
		{name: "C1 next line", in: "a\u0085b@example.com", wantErr: true},
		{name: "international", in: "zoë@例え.jp", want: "zoë@例え.jp"},
		// Browsers send an internationalised domain in ASCII; it is the
		// same address.
		{name: "domain in punycode", in: "ute@xn--bcher-kva.example", want: "ute@bücher.example"},
		{name: "domain in upper case", in: "UTE@BÜCHER.EXAMPLE", want: "ute@bücher.example"},
		{name: "full-width domain", in: "a@ｅxample.com", want: "a@example.com"},
		// One address however Unicode spells it: composed or not,
		// full-width, a ligature.
		{name: "decomposed letter", in: "A\u030asa@x.com", want: "åsa@x.com"},
		{name: "full-width local part", in: "ＡＮＮ@example.com", want: "ann@example.com"},
		{name: "ligature", in: "\ufb00@x.com", want: "ff@x.com"},
		{name: "two at signs, one full-width", in: "a\uff20b@x.com", wantErr: true},
		{name: "full-width at sign", in: "josé\uff20bücher.example", want: "josé@bücher.example"},
		{name: "address literal kept", in: "a@[127.0.0.1]", want: "a@[127.0.0.1]"},
		{name: "underscore domain kept", in: "a@foo_bar.example", want: "a@foo_bar.example"},
		{name: "255 bytes", in: "a" + longest, wantErr: true},
		{name: "far too long", in: strings.Repeat("a", 5000) + "@example.com", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizeEmail(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("NormalizeEmail(%q) = %q, nil; want an error", tt.in, got)
				}
				if !errors.Is(err, ErrInvalidInput) {
					t.Errorf("NormalizeEmail(%q) error = %v; want it to wrap ErrInvalidInput", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NormalizeEmail(%q) = %v; want nil", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("NormalizeEmail(%q) = %q; want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestNormalizeGroups(t *testing.T) {
	// n groups of 64 bytes, and one of last bytes: 65*n+last in all.
	long := func(n, last int) []string {
		var gs []string
		for i := range n {
			gs = append(gs, fmt.Sprintf("%02d", i)+strings.Repeat("g", 62))
		}
		return append(gs, strings.Repeat("z", last))
	}
	tests := []struct {
		name    string
		in      []string
		want    []string
		wantErr bool
	}{
		{name: "nil", in: nil, want: nil},
		{name: "kept in order", in: []string{"dev", "admins"}, want: []string{"dev", "admins"}},
		{name: "trimmed", in: []string{" admins ", "\tdev\n"}, want: []string{"admins", "dev"}},
		{name: "empties dropped", in: []string{"", "a", "   ", "b"}, want: []string{"a", "b"}},
		{name: "only empties", in: []string{"", " "}, want: nil},
		{name: "duplicates dropped", in: []string{"a", "b", "a", " a ", "b"}, want: []string{"a", "b"}},
		{name: "case sensitive", in: []string{"Admins", "admins"}, want: []string{"Admins", "admins"}},
		{name: "inner space kept", in: []string{"release managers"}, want: []string{"release managers"}},
		{name: "unicode", in: []string{"équipe"}, want: []string{"équipe"}},
		{name: "64 bytes", in: []string{strings.Repeat("g", 64)}, want: []string{strings.Repeat("g", 64)}},
		{name: "comma would split the header", in: []string{"a,b"}, wantErr: true},
		{name: "comma among good ones", in: []string{"ok", "admins,dev"}, wantErr: true},
		{name: "newline", in: []string{"a\nb"}, wantErr: true},
		{name: "carriage return", in: []string{"a\rb"}, wantErr: true},
		{name: "header injection", in: []string{"dev\r\nX-Sigra-User: admin"}, wantErr: true},
		{name: "65 bytes", in: []string{strings.Repeat("g", 65)}, wantErr: true},
		{name: "invalid UTF-8", in: []string{"a\xffb"}, wantErr: true},
		// The list travels in one audit metadata value, cut beyond it.
		{name: "1024 bytes in all", in: long(15, 49), want: long(15, 49)},
		{name: "duplicates not counted", in: append(long(15, 49), long(15, 49)...), want: long(15, 49)},
		{name: "1025 bytes in all", in: long(15, 50), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizeGroups(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("NormalizeGroups(%q) = %q, nil; want an error", tt.in, got)
				}
				if !errors.Is(err, ErrInvalidInput) {
					t.Errorf("NormalizeGroups(%q) error = %v; want it to wrap ErrInvalidInput", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NormalizeGroups(%q) = %v; want nil", tt.in, err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("NormalizeGroups(%q) = %q; want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestCleanName(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr bool
	}{
		{name: "plain", in: "Alice Smith", want: "Alice Smith"},
		{name: "empty allowed", in: "", want: ""},
		{name: "trimmed", in: "  Alice \n", want: "Alice"},
		{name: "unicode", in: "Zoë Ångström 李", want: "Zoë Ångström 李"},
		{name: "128 bytes", in: strings.Repeat("n", 128), want: strings.Repeat("n", 128)},
		{name: "129 bytes", in: strings.Repeat("n", 129), wantErr: true},
		{name: "NUL", in: "Ali\x00ce", wantErr: true},
		{name: "inner newline", in: "Alice\nSmith", wantErr: true},
		{name: "header injection", in: "Alice\r\nX-Sigra-User: admin", wantErr: true},
		{name: "tab", in: "Alice\tSmith", wantErr: true},
		{name: "escape", in: "Alice\x1b[31m", wantErr: true},
		{name: "DEL", in: "Alice\x7f", wantErr: true},
		{name: "invalid UTF-8", in: "Alice\xff", wantErr: true},
		{name: "C1 CSI", in: "Alice\u009b2J", wantErr: true},
		{name: "line separator", in: "Alice\u2028Smith", wantErr: true},
		{name: "right-to-left override", in: "Alice\u202eecilA", wantErr: true},
		{name: "zero-width joiner in an emoji", in: "Ann 👩\u200d💻", want: "Ann 👩\u200d💻"},
		{name: "Persian with a non-joiner", in: "می\u200cخواهم", want: "می\u200cخواهم"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CleanName(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("CleanName(%q) = %q, nil; want an error", tt.in, got)
				}
				if !errors.Is(err, ErrInvalidInput) {
					t.Errorf("CleanName(%q) error = %v; want it to wrap ErrInvalidInput", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("CleanName(%q) = %v; want nil", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("CleanName(%q) = %q; want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestUserInGroup(t *testing.T) {
	u := &User{Groups: []string{"dev", "admins"}}
	for g, want := range map[string]bool{"dev": true, "admins": true, "Admins": false, "": false, "ops": false} {
		if got := u.InGroup(g); got != want {
			t.Errorf("InGroup(%q) = %t; want %t", g, got, want)
		}
	}
	if (&User{}).InGroup("") {
		t.Errorf("a user without groups is in group %q", "")
	}
}

func TestUserCloneIsDeep(t *testing.T) {
	u := &User{ID: "id", Email: "a@example.com", Groups: []string{"dev"}}
	c := u.Clone()
	c.Groups[0] = "admins"
	c.Email = "b@example.com"
	if u.Groups[0] != "dev" {
		t.Errorf("original groups = %q after changing the clone; want %q", u.Groups, []string{"dev"})
	}
	if u.Email != "a@example.com" {
		t.Errorf("original email = %q after changing the clone", u.Email)
	}
	if c.ID != u.ID {
		t.Errorf("clone ID = %q; want %q", c.ID, u.ID)
	}
}

// Normalising twice is normalising once, so that a stored address looked
// up again finds itself.
func TestNormalizeEmailIsIdempotent(t *testing.T) {
	parts := []string{"a", "A", "ß", "ẞ", "ς", "Σ", "ı", "İ", "\u0345", "ǅ", "ﬃ", "ｅ", "Ａ", "\u0301", "é", "K", "Ω", "ᏸ", "Ꮳ", "ｘｎ--", "．", "。", "\uff20"}
	for _, l1 := range parts {
		for _, l2 := range parts {
			for _, d := range parts {
				in := "x" + l1 + l2 + "@y" + d + ".example"
				once, err := NormalizeEmail(in)
				if err != nil {
					continue
				}
				if twice, err := NormalizeEmail(once); err != nil || twice != once {
					t.Errorf("NormalizeEmail(%q) = %q, then %q, %v", in, once, twice, err)
				}
			}
		}
	}
}
