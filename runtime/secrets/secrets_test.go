package secrets

import (
	"crypto/ed25519"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestEnsureCreatesPrivateFilesOnce(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	s, err := Ensure(data, []string{"sensors"})
	if err != nil {
		t.Fatal(err)
	}
	if m := mode(t, data); m != 0o700 {
		t.Errorf("data dir mode %04o, want 0700", m)
	}
	if m := mode(t, s.Dir); m != 0o700 {
		t.Errorf("secrets dir mode %04o, want 0700", m)
	}
	for _, f := range []string{s.Runtime.SeedFile, s.Client.SeedFile, s.Users["sensors"].SeedFile, s.AdminTokenFile, s.IngressTokenFile, filepath.Join(s.Dir, "signing.key")} {
		if m := mode(t, f); m != 0o600 {
			t.Errorf("%s mode %04o, want 0600", f, m)
		}
	}
	ids := []string{s.Runtime.Public, s.Client.Public, s.Users["sensors"].Public}
	for _, id := range ids {
		if !strings.HasPrefix(id, "U") {
			t.Errorf("public nkey %q is not a user key", id)
		}
	}
	if len(slices.Compact(slices.Sorted(slices.Values(ids)))) != 3 {
		t.Errorf("identities share keys: %v", ids)
	}
	pub, err := ReadSigningPublicKeys(data)
	if err != nil || len(pub) != 1 || pub[0] != EncodePublicKey(s.Signing.Public().(ed25519.PublicKey)) {
		t.Fatalf("signing.pub = %v, %v", pub, err)
	}
	tok, err := ReadAdminToken(s.AdminTokenFile)
	if err != nil || len(tok) < 40 {
		t.Fatalf("admin token %q, %v", tok, err)
	}
	itok, err := ReadIngressToken(s.IngressTokenFile)
	if err != nil || len(itok) < 40 || itok == tok {
		t.Fatalf("ingress token %q, %v: want one of its own", itok, err)
	}

	// A second Ensure reads the same keys.
	again, err := Ensure(data, []string{"sensors"})
	if err != nil {
		t.Fatal(err)
	}
	if again.Client != s.Client || again.Users["sensors"] != s.Users["sensors"] || !again.Signing.Equal(s.Signing) {
		t.Fatal("a second Ensure made new keys")
	}
	if tok2, _ := ReadAdminToken(again.AdminTokenFile); tok2 != tok {
		t.Fatal("a second Ensure made a new admin token")
	}
	if tok2, _ := ReadIngressToken(again.IngressTokenFile); tok2 != itok {
		t.Fatal("a second Ensure made a new ingress token")
	}
}

func TestEnsureRefusesAnOpenDataDir(t *testing.T) {
	data := t.TempDir()
	if err := os.Chmod(data, 0o777); err != nil {
		t.Fatal(err)
	}
	_, err := Ensure(data, nil)
	if err == nil || !strings.Contains(err.Error(), "chmod go-w") {
		t.Fatalf("Ensure on a world-writable data dir: %v", err)
	}
	if _, err := Ensure(t.TempDir(), []string{"client"}); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("a user named client: %v", err)
	}
}

func TestEnsureTightensLooseFiles(t *testing.T) {
	data := t.TempDir()
	s, err := Ensure(data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(s.AdminTokenFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(s.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(data, nil); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, s.AdminTokenFile); m != 0o600 {
		t.Errorf("token mode %04o after Ensure, want 0600", m)
	}
	if m := mode(t, s.Dir); m != 0o700 {
		t.Errorf("secrets dir mode %04o after Ensure, want 0700", m)
	}
}

func TestRotate(t *testing.T) {
	data := t.TempDir()
	s, err := Ensure(data, []string{"sensors"})
	if err != nil {
		t.Fatal(err)
	}
	old := EncodePublicKey(s.Signing.Public().(ed25519.PublicKey))
	keys, err := RotateSigning(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[1] != old || keys[0] == old {
		t.Fatalf("rotation keys %v; want a new key, then %s", keys, old)
	}
	if pub, _ := ReadSigningPublicKeys(data); !slices.Equal(pub, keys) {
		t.Fatalf("signing.pub during the rotation: %v, want %v", pub, keys)
	}
	// Reading the keys again keeps the rotation; the next start signs
	// with the new key and lists it alone.
	s2, err := Ensure(data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := EncodePublicKey(s2.Signing.Public().(ed25519.PublicKey)); got != keys[0] {
		t.Fatalf("signing key after rotation %s, want %s", got, keys[0])
	}
	if pub, _ := ReadSigningPublicKeys(data); !slices.Equal(pub, keys) {
		t.Fatalf("signing.pub after Ensure during the rotation: %v, want %v", pub, keys)
	}
	if err := s2.PublishSigningKey(); err != nil {
		t.Fatal(err)
	}
	if pub, _ := ReadSigningPublicKeys(data); !slices.Equal(pub, keys[:1]) {
		t.Fatalf("signing.pub after the restart: %v, want %v", pub, keys[:1])
	}

	tok, _ := ReadAdminToken(s.AdminTokenFile)
	if err := RotateAdminToken(data); err != nil {
		t.Fatal(err)
	}
	if tok2, _ := ReadAdminToken(s.AdminTokenFile); tok2 == tok || tok2 == "" {
		t.Fatal("the admin token did not change")
	}
	if m := mode(t, s.AdminTokenFile); m != 0o600 {
		t.Errorf("rotated token mode %04o", m)
	}
	itok, _ := ReadIngressToken(s.IngressTokenFile)
	if err := RotateIngressToken(data); err != nil {
		t.Fatal(err)
	}
	if tok2, _ := ReadIngressToken(s.IngressTokenFile); tok2 == itok || tok2 == "" {
		t.Fatal("the ingress token did not change")
	}

	for _, name := range []string{"client", "sensors"} {
		before := s.Client
		if name != "client" {
			before = s.Users[name]
		}
		id, err := RotateNKey(data, name)
		if err != nil {
			t.Fatal(err)
		}
		if id.Public == before.Public || id.SeedFile != before.SeedFile {
			t.Errorf("rotated %s: %+v, before %+v", name, id, before)
		}
	}
	if _, err := RotateNKey(data, "nobody"); err == nil || !strings.Contains(err.Error(), "runtime, client, sensors") {
		t.Fatalf("rotating an unknown identity: %v", err)
	}
}

// TestKeyID pins the key id of the documented test vector: the public key
// of the seed 32 bytes of 0x01.
func TestKeyID(t *testing.T) {
	seed, _ := hex.DecodeString(strings.Repeat("01", 32))
	pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	if got, want := EncodePublicKey(pub), "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w="; got != want {
		t.Errorf("EncodePublicKey = %s, want %s", got, want)
	}
	if got, want := KeyID(pub), "34750f98bd59fcfc"; got != want {
		t.Errorf("KeyID = %q, want %s", got, want)
	}
}
