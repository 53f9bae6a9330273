package config

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/interlock-dev/interlock/events"
)

func TestSigningGenerated(t *testing.T) {
	cfg := Default()
	cfg.Data = t.TempDir()
	first, err := cfg.Signing()
	if err != nil {
		t.Fatal(err)
	}
	if !first.Generated || first.KeyFile != filepath.Join(cfg.Data, "signing", "key.pem") {
		t.Fatalf("first start: %+v", first)
	}
	for path, want := range map[string]os.FileMode{first.KeyFile: 0o600, filepath.Dir(first.KeyFile): 0o700} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: %v, %v; want mode %v", path, fi.Mode(), err, want)
		}
	}
	again, err := cfg.Signing()
	if err != nil {
		t.Fatal(err)
	}
	if again.Generated || again.Signer.KeyID() != first.Signer.KeyID() {
		t.Fatalf("second start made a new key: %s, was %s", again.Signer.KeyID(), first.Signer.KeyID())
	}
}

func TestSigningFromFiles(t *testing.T) {
	dir := t.TempDir()
	cfg := Default()
	cfg.Data = dir
	cfg.SigningKey = filepath.Join(dir, "new.pem")
	if _, err := generateKey(cfg.SigningKey); err != nil {
		t.Fatal(err)
	}
	old := Default()
	old.Data = filepath.Join(dir, "old")
	oldSigning, err := old.Signing()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := events.MarshalPublicKey(oldSigning.Signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	pubFile := filepath.Join(dir, "old.pub.pem")
	if err := os.WriteFile(pubFile, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	loaded, err := Load([]string{"--data", dir, "--signing-key", cfg.SigningKey}, env(map[string]string{"INTERLOCK_VERIFY_KEYS": pubFile + ", " + old.DefaultKeyFile()}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s, err := loaded.Signing()
	if err != nil {
		t.Fatal(err)
	}
	if s.Generated || len(s.Verify) != 2 || !s.Verify[0].Equal(oldSigning.Signer.Public()) || !s.Verify[1].Equal(oldSigning.Signer.Public()) {
		t.Fatalf("signing from files: generated %v, %d verify keys", s.Generated, len(s.Verify))
	}
	if _, err := os.Stat(loaded.DefaultKeyFile()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a key was generated although --signing-key was given: %v", err)
	}

	bad := loaded
	bad.SigningKey = pubFile // a public key cannot sign
	if _, err := bad.Signing(); !errors.Is(err, events.ErrKey) {
		t.Fatalf("a public key as signing key: %v, want ErrKey", err)
	}
	bad.SigningKey, bad.VerifyKeys = cfg.SigningKey, []string{filepath.Join(dir, "missing.pem")}
	if _, err := bad.Signing(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing verify key: %v", err)
	}
}

func TestSigningKeyRequiredWithNATSURL(t *testing.T) {
	_, err := Load([]string{"--nats-url", "nats://a:4222"}, env(nil), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "signing-key") {
		t.Fatalf("--nats-url without --signing-key: %v", err)
	}
	if _, err := Load([]string{"--nats-url", "nats://a:4222", "--signing-key", "k.pem"}, env(nil), io.Discard); err != nil {
		t.Fatalf("--nats-url with --signing-key: %v", err)
	}
}
