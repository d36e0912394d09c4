package caddymodule

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// identityHeaderRef is the reference for isIdentityHeader, written the
// plain way: fold the whole name (ASCII letters to lower case, every
// byte that is not a letter or a digit to '-'), then compare.
func identityHeaderRef(name string, remote bool) bool {
	b := []byte(name)
	for i, c := range b {
		switch {
		case 'A' <= c && c <= 'Z':
			b[i] = c + 'a' - 'A'
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		default:
			b[i] = '-'
		}
	}
	folded := string(b)
	if strings.HasPrefix(folded, "x-sigra-") {
		return true
	}
	switch folded {
	case "remote-user", "remote-email", "remote-groups", "remote-name":
		return remote
	}
	return false
}

// FuzzIsIdentityHeader: isIdentityHeader agrees with identityHeaderRef
// for every name, with the remote aliases on and off; turning the aliases
// on only ever adds names; and stripIdentity removes such a header, and
// its name from Connection, while keeping any other header and token.
func FuzzIsIdentityHeader(f *testing.F) {
	for _, name := range []string{
		hdrUser, hdrEmail, hdrName, hdrGroups, hdrOrg, hdrAMR, hdrFlags, hdrSession, hdrAssertion,
		"x-sigra-user", "X_SIGRA_USER", "x_Sigra-Anything", "X-Sigra-", "X-Sigra", "X-Sigr", "X-Sigra_",
		"Remote-User", "remote_email", "REMOTE-GROUPS", "Remote-Name", "Remote_name", "Remote-Users",
		"Remote-User-X", "Remote-", "Remote-Addr", "Remote", "remote-usr", "X-Forwarded-User",
		"Content-Type", "", "-", "X-Sigra-\x00", " X-Sigra-User", "X-Sigra-User ", "X\u200b-Sigra-User",
		"X-\u017figra-User", "\u212a-Sigra-User", "Xx-Sigra-User", "Remote-User\r\n",
		"X.Sigra.User", "x.sigra_groups", "Remote.User", "remote.Email", "X+Sigra~Amr", "X-Sigra.", "X.Sigr",
	} {
		f.Add(name, false)
		f.Add(name, true)
	}
	f.Fuzz(func(t *testing.T, name string, remote bool) {
		got := isIdentityHeader(name, remote)
		if want := identityHeaderRef(name, remote); got != want {
			t.Fatalf("isIdentityHeader(%q, remote %v) = %v; want %v", name, remote, got, want)
		}
		if isIdentityHeader(name, false) && !isIdentityHeader(name, true) {
			t.Fatalf("isIdentityHeader(%q): remote aliases removed a name", name)
		}

		keep := "X-Keep-Me"
		if isIdentityHeader(keep, remote) || name == keep || strings.EqualFold(name, "Connection") {
			return
		}
		r := &http.Request{Header: http.Header{
			name:         {"forged"},
			keep:         {"kept"},
			"Connection": {keep + ", " + name},
		}}
		stripIdentity(r, remote)
		if _, ok := r.Header[name]; ok == got {
			t.Fatalf("stripIdentity(%q, remote %v): header still there %v; identity %v", name, remote, ok, got)
		}
		if r.Header.Get(keep) != "kept" {
			t.Fatalf("stripIdentity(%q) dropped %s", name, keep)
		}
		tokens := connectionTokens(r.Header["Connection"])
		if !slices.Contains(tokens, keep) {
			t.Fatalf("stripIdentity(%q) dropped %s from Connection: %q", name, keep, r.Header["Connection"])
		}
		for _, tok := range tokens {
			if isIdentityHeader(tok, remote) {
				t.Fatalf("stripIdentity(%q) left %q in Connection", name, tok)
			}
		}
	})
}

func connectionTokens(vals []string) []string {
	var out []string
	for _, v := range vals {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" {
				out = append(out, tok)
			}
		}
	}
	return out
}

// FuzzCleanConnection: the Connection values cleanConnection returns hold
// no identity name, keep every other non-empty token in order, and are the
// input itself when it held no identity name.
func FuzzCleanConnection(f *testing.F) {
	for _, v := range []string{
		"", "close", "keep-alive, Upgrade", "X-Sigra-User", "close, X-Sigra-User", "x_sigra_groups,close",
		"Remote-User", " Remote-Email ,  , keep-alive", ",,,", "X-Sigra-User,X-Sigra-Email", "Upgrade,\tX-Sigra-Amr\t",
	} {
		f.Add(v, "", false)
		f.Add(v, "TE, Remote-Groups", true)
	}
	f.Fuzz(func(t *testing.T, v1, v2 string, remote bool) {
		in := []string{v1, v2}
		out := cleanConnection(slices.Clone(in), remote)
		var want []string
		dirty := false
		for _, tok := range connectionTokens(in) {
			if identityHeaderRef(tok, remote) {
				dirty = true
			} else {
				want = append(want, tok)
			}
		}
		if !dirty {
			if !slices.Equal(out, in) {
				t.Fatalf("cleanConnection(%q) = %q; want it unchanged", in, out)
			}
			return
		}
		if got := connectionTokens(out); !slices.Equal(got, want) {
			t.Fatalf("cleanConnection(%q, remote %v) = %q; want tokens %q", in, remote, out, want)
		}
	})
}
