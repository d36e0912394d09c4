package seal

import (
	"bytes"
	"encoding/base64"
	"testing"
)

// fuzzKey and fuzzOtherKey are fixed keys; fuzzOtherKey differs from
// fuzzKey in one bit.
var (
	fuzzKey      = bytes.Repeat([]byte{0xfb, 0xef, 0xbe}, 11)[:KeySize]
	fuzzOtherKey = func() []byte { k := bytes.Clone(fuzzKey); k[31] ^= 1; return k }()
)

func fuzzBoxes(f *testing.F) (box, other *Box) {
	box, err := New(fuzzKey)
	if err != nil {
		f.Fatal(err)
	}
	other, err = New(fuzzOtherKey)
	if err != nil {
		f.Fatal(err)
	}
	return box, other
}

// FuzzSealOpen: Seal then Open with the same aad gives back the plaintext
// (and leaves the plaintext alone); the sealed value is nonce, ciphertext
// and tag, fresh each time; and Open refuses, with ErrOpen and no
// plaintext, the value with any one byte changed, truncated or extended,
// under another aad, or under another key.
func FuzzSealOpen(f *testing.F) {
	box, other := fuzzBoxes(f)
	f.Add([]byte("JBSWY3DPEHPK3PXP"), []byte("user:0190a3c4"), []byte("user:0190a3c5"), uint16(0), byte(0))
	f.Add([]byte("JBSWY3DPEHPK3PXP"), []byte("user:0190a3c4"), []byte{}, uint16(12), byte(0xff))
	f.Add([]byte{}, []byte{}, []byte("x"), uint16(27), byte(1))
	f.Add([]byte{0, 1, 2, 0xff}, []byte(nil), []byte("\x00"), uint16(15), byte('A'))
	f.Add(bytes.Repeat([]byte("k"), 4096), []byte("keys"), []byte("keys "), uint16(4000), byte('k'))
	f.Fuzz(func(t *testing.T, plaintext, aad, otherAAD []byte, pos uint16, b byte) {
		keep := bytes.Clone(plaintext)
		sealed := box.Seal(plaintext, aad)
		if !bytes.Equal(plaintext, keep) {
			t.Fatalf("Seal changed its plaintext")
		}
		if len(sealed) != 12+len(plaintext)+16 {
			t.Fatalf("sealed %d bytes of plaintext into %d; want %d", len(plaintext), len(sealed), 12+len(plaintext)+16)
		}
		if len(plaintext) >= 16 && bytes.Contains(sealed, plaintext) {
			t.Fatalf("sealed value holds the plaintext")
		}
		got, err := box.Open(sealed, aad)
		if err != nil || !bytes.Equal(got, plaintext) {
			t.Fatalf("Open(Seal(%q)) = %q, %v", plaintext, got, err)
		}
		if again := box.Seal(plaintext, aad); bytes.Equal(again, sealed) {
			t.Fatalf("two Seals of %q are identical: nonce reused", plaintext)
		}

		refused := func(what string, s, a []byte, bx *Box) {
			t.Helper()
			if pt, err := bx.Open(s, a); err != ErrOpen || pt != nil {
				t.Fatalf("Open(%s) = %q, %v; want nil, ErrOpen", what, pt, err)
			}
		}
		if !bytes.Equal(aad, otherAAD) {
			refused("under another aad", sealed, otherAAD, box)
		}
		refused("under another key", sealed, aad, other)
		m := bytes.Clone(sealed)
		i := int(pos) % len(m)
		if m[i] == b {
			m[i] ^= 0x80
		} else {
			m[i] = b
		}
		refused("with one byte changed", m, aad, box)
		refused("truncated", sealed[:i], aad, box)
		refused("extended", append(bytes.Clone(sealed), b), aad, box)
		refused("with a byte dropped", append(bytes.Clone(sealed[:i]), sealed[i+1:]...), aad, box)
	})
}

// FuzzOpen: Open of bytes that Seal did not make is ErrOpen with no
// plaintext, never a panic, and never changes its input. (The seeds that
// are genuine sealed values check the accepting side.)
func FuzzOpen(f *testing.F) {
	box, _ := fuzzBoxes(f)
	// A fixed nonce, so every fuzz worker makes the same genuine value
	// (Seal draws a fresh one).
	nonce := bytes.Repeat([]byte{7}, box.aead.NonceSize())
	genuine := box.aead.Seal(bytes.Clone(nonce), nonce, []byte("JBSWY3DPEHPK3PXP"), []byte("user:1"))
	if pt, err := box.Open(genuine, []byte("user:1")); err != nil || string(pt) != "JBSWY3DPEHPK3PXP" {
		f.Fatalf("Open(genuine) = %q, %v", pt, err)
	}
	f.Add(genuine, []byte("user:1"))
	f.Add(genuine, []byte("user:2"))
	f.Add(genuine[:27], []byte("user:1"))
	f.Add(genuine[:28], []byte("user:1"))
	f.Add([]byte{}, []byte(nil))
	f.Add(make([]byte, 28), []byte{})
	f.Add([]byte(base64.StdEncoding.EncodeToString(genuine)), []byte("user:1"))
	f.Fuzz(func(t *testing.T, sealed, aad []byte) {
		keep := bytes.Clone(sealed)
		pt, err := box.Open(sealed, aad)
		if !bytes.Equal(sealed, keep) {
			t.Fatalf("Open changed its input")
		}
		if err != nil {
			if err != ErrOpen || pt != nil {
				t.Fatalf("Open(%x) = %q, %v; want nil, ErrOpen", sealed, pt, err)
			}
			return
		}
		// Accepted: it must be a genuine value, the only one being genuine.
		if !bytes.Equal(sealed, genuine) || string(aad) != "user:1" || string(pt) != "JBSWY3DPEHPK3PXP" {
			t.Fatalf("Open(%x, %q) accepted a value Seal did not make: %q", sealed, aad, pt)
		}
	})
}
