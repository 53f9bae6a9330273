package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/interlock-dev/interlock/events"
)

// Signing is what the server signs and verifies events with.
type Signing struct {
	Signer *events.Signer
	// Verify are earlier keys that still verify.
	Verify []ed25519.PublicKey
	// KeyFile is where the signing key came from; Generated says it was made just now.
	KeyFile   string
	Generated bool
}

// DefaultKeyFile is where an embedded server keeps its signing key, under the data directory.
func (c Config) DefaultKeyFile() string { return filepath.Join(c.Data, "signing", "key.pem") }

// Signing reads the signing key and the verification keys. Without SigningKey the key is
// DefaultKeyFile, generated (mode 0600, in a directory of mode 0700) when it does not exist
// yet. Errors name the file; a key that does not parse wraps events.ErrKey.
func (c Config) Signing() (Signing, error) {
	s := Signing{KeyFile: c.SigningKey}
	if s.KeyFile == "" {
		s.KeyFile = c.DefaultKeyFile()
		generated, err := generateKey(s.KeyFile)
		if err != nil {
			return Signing{}, err
		}
		s.Generated = generated
	}
	data, err := os.ReadFile(s.KeyFile)
	if err != nil {
		return Signing{}, fmt.Errorf("signing-key: %w", err)
	}
	key, err := events.ParsePrivateKey(data)
	if err != nil {
		return Signing{}, fmt.Errorf("signing-key %s: %w", s.KeyFile, err)
	}
	if s.Signer, err = events.NewSigner(key); err != nil {
		return Signing{}, fmt.Errorf("signing-key %s: %w", s.KeyFile, err)
	}
	for _, path := range c.VerifyKeys {
		data, err := os.ReadFile(path)
		if err != nil {
			return Signing{}, fmt.Errorf("verify-keys: %w", err)
		}
		keys, err := events.ParsePublicKeys(data)
		if err != nil {
			return Signing{}, fmt.Errorf("verify-keys %s: %w", path, err)
		}
		s.Verify = append(s.Verify, keys...)
	}
	return s, nil
}

// generateKey writes a new key to path unless a file is there, and reports whether it did.
func generateKey(path string) (bool, error) {
	if _, err := os.Stat(path); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("signing key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, fmt.Errorf("signing key directory: %w", err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return false, fmt.Errorf("generate signing key: %w", err)
	}
	pemBytes, err := events.MarshalPrivateKey(key)
	if err != nil {
		return false, err
	}
	// O_EXCL: two servers starting on one data directory do not overwrite each other's key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("signing key: %w", err)
	}
	if _, err := f.Write(pemBytes); err != nil {
		f.Close()
		return false, fmt.Errorf("write signing key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return false, fmt.Errorf("write signing key: %w", err)
	}
	if err := f.Close(); err != nil {
		return false, fmt.Errorf("write signing key: %w", err)
	}
	return true, nil
}
