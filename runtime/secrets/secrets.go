// Package secrets makes and reads the key material of a data dir, in
// <data>/secrets: the nkeys of the embedded NATS server's identities (the
// runtime, the client identity of publishers and the command line, and the
// users a module spec declares), the bearer tokens of the admin API and of
// the HTTP/Connect front door, and the Ed25519 key pair the runtime signs
// function calls with.
//
// Everything is created on first use: the directory with mode 0700, each
// file 0600, written atomically. Only the public signing key is meant to
// leave the machine: it is also written to <data>/signing.pub.
package secrets

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/nkeys"
)

// File names, under the data dir.
const (
	// DirName is the directory of the secrets.
	DirName = "secrets"
	// SigningPublicFile lists the public keys function endpoints should
	// accept, one per line, base64 (standard, padded) of the raw 32 bytes:
	// the current key first, then the previous one while a rotation is in
	// progress.
	SigningPublicFile = "signing.pub"
	adminTokenFile    = "admin.token"
	ingressTokenFile  = "ingress.token"
	signingKeyFile    = "signing.key"
	usersDir          = "users"
)

// The identities every data dir has.
const (
	// Runtime is the runtime's own NATS identity: it may do anything.
	Runtime = "runtime"
	// Client is the identity of publishers and the command line.
	Client = "client"
)

// Identity is a NATS identity: an nkey whose seed is in a file.
type Identity struct {
	// Name is "runtime", "client" or a module spec user's name.
	Name string
	// SeedFile is the absolute path of the nkey seed file, the credentials
	// a client connects with.
	SeedFile string
	// Public is the public nkey ("U..."), which the server knows.
	Public string
}

// Set is the key material of one data dir.
type Set struct {
	// Dir is the absolute path of <data>/secrets.
	Dir string
	// Runtime and Client are the identities every data dir has.
	Runtime, Client Identity
	// Users are the module spec's users, by name.
	Users map[string]Identity
	// AdminTokenFile holds the admin API's bearer token.
	AdminTokenFile string
	// IngressTokenFile holds the bearer token of the HTTP/Connect front
	// door, which clients send messages with.
	IngressTokenFile string
	// Signing is the key the runtime signs function calls with.
	Signing ed25519.PrivateKey
	// SigningPublicFile is <data>/signing.pub.
	SigningPublicFile string
}

// Ensure creates what is missing of the data dir's key material, including
// an nkey for each user named, and reads it. The data dir is created with
// mode 0700 if it does not exist; one that other users may write to is
// refused, since they could replace the keys.
func Ensure(dataDir string, users []string) (*Set, error) {
	if err := ensureDataDir(dataDir); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	s := &Set{Dir: filepath.Join(abs, DirName), Users: map[string]Identity{},
		AdminTokenFile: filepath.Join(abs, DirName, adminTokenFile), IngressTokenFile: filepath.Join(abs, DirName, ingressTokenFile),
		SigningPublicFile: filepath.Join(abs, SigningPublicFile)}
	if err := privateDir(s.Dir); err != nil {
		return nil, err
	}
	if s.Runtime, err = ensureIdentity(Runtime, filepath.Join(s.Dir, Runtime+".nk")); err != nil {
		return nil, err
	}
	if s.Client, err = ensureIdentity(Client, filepath.Join(s.Dir, Client+".nk")); err != nil {
		return nil, err
	}
	if len(users) > 0 {
		if err := privateDir(filepath.Join(s.Dir, usersDir)); err != nil {
			return nil, err
		}
	}
	for _, u := range users {
		if u == Runtime || u == Client {
			return nil, fmt.Errorf("secrets: user name %q is reserved", u)
		}
		if s.Users[u], err = ensureIdentity(u, UserSeedFile(s.Dir, u)); err != nil {
			return nil, err
		}
	}
	if err := ensureFile(s.AdminTokenFile, newToken); err != nil {
		return nil, err
	}
	if err := ensureFile(s.IngressTokenFile, newToken); err != nil {
		return nil, err
	}
	if err := ensureFile(filepath.Join(s.Dir, signingKeyFile), newSigningKey); err != nil {
		return nil, err
	}
	if s.Signing, err = readSigningKey(filepath.Join(s.Dir, signingKeyFile)); err != nil {
		return nil, err
	}
	if _, err := os.Stat(s.SigningPublicFile); errors.Is(err, fs.ErrNotExist) {
		if err := s.PublishSigningKey(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// PublishSigningKey writes <data>/signing.pub with the current signing key
// alone: the runtime calls it when it starts signing with that key, which
// ends a rotation in progress.
func (s *Set) PublishSigningKey() error {
	return WriteFile(s.SigningPublicFile, []byte(EncodePublicKey(s.Signing.Public().(ed25519.PublicKey))+"\n"), 0o644)
}

// UserSeedFile is where the seed of a module spec user's nkey is.
func UserSeedFile(secretsDir, name string) string {
	return filepath.Join(secretsDir, usersDir, name+".nk")
}

// ensureDataDir creates the data dir private, or checks an existing one.
func ensureDataDir(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("secrets: creating data dir: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("secrets: data dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("secrets: data dir %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("data dir %s may be written by other users (mode %04o): they could replace its keys; run chmod go-w %s",
			dir, fi.Mode().Perm(), dir)
	}
	return nil
}

// privateDir creates dir with mode 0700, or makes an existing one 0700.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	return nil
}

// ensureFile creates path with make's content if it does not exist, and
// makes an existing one private.
func ensureFile(path string, generate func() ([]byte, error)) error {
	if _, err := os.Stat(path); err == nil {
		return os.Chmod(path, 0o600)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("secrets: %w", err)
	}
	b, err := generate()
	if err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	return WriteFile(path, b, 0o600)
}

func ensureIdentity(name, seedFile string) (Identity, error) {
	if err := ensureFile(seedFile, newNKey); err != nil {
		return Identity{}, err
	}
	return readIdentity(name, seedFile)
}

func readIdentity(name, seedFile string) (Identity, error) {
	b, err := os.ReadFile(seedFile)
	if err != nil {
		return Identity{}, fmt.Errorf("secrets: %w", err)
	}
	defer clear(b)
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(b))))
	if err != nil {
		return Identity{}, fmt.Errorf("secrets: nkey of %s in %s: %w", name, seedFile, err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return Identity{}, fmt.Errorf("secrets: nkey of %s in %s: %w", name, seedFile, err)
	}
	return Identity{Name: name, SeedFile: seedFile, Public: pub}, nil
}

func newNKey() ([]byte, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	return append(seed, '\n'), nil
}

func newToken() ([]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return []byte(base64.RawURLEncoding.EncodeToString(b) + "\n"), nil
}

func newSigningKey() ([]byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func readSigningKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("secrets: %s holds no PEM private key", path)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("secrets: %s: %w", path, err)
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("secrets: %s holds a %T, not an Ed25519 key", path, key)
	}
	return priv, nil
}

// ReadAdminToken reads the admin API's bearer token from its file.
func ReadAdminToken(file string) (string, error) { return readToken("admin", file) }

// ReadIngressToken reads the front door's bearer token from its file.
func ReadIngressToken(file string) (string, error) { return readToken("ingress", file) }

func readToken(what, file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s token: %w", what, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s token file %s is empty", what, file)
	}
	return tok, nil
}

// EncodePublicKey encodes a public signing key as function endpoints take
// it (TWINFLOW_VERIFY_KEY): base64, standard alphabet with padding, of the
// raw 32 bytes.
func EncodePublicKey(pub ed25519.PublicKey) string {
	return base64.StdEncoding.EncodeToString(pub)
}

// KeyID identifies a public signing key in signatures: the first 16
// lowercase hex characters of the SHA-256 of its raw 32 bytes.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// ReadSigningPublicKeys reads the keys listed in <data>/signing.pub.
func ReadSigningPublicKeys(dataDir string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, SigningPublicFile))
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			keys = append(keys, l)
		}
	}
	return keys, nil
}

// RotateSigning replaces the signing key with a new one. A running runtime
// keeps signing with the key it started with; the next start uses the new
// one. signing.pub lists both until then, so that endpoints can be given
// both first. It returns the keys to accept during the rotation, the new
// one first.
func RotateSigning(dataDir string) ([]string, error) {
	s, err := Ensure(dataDir, nil)
	if err != nil {
		return nil, err
	}
	old := EncodePublicKey(s.Signing.Public().(ed25519.PublicKey))
	b, err := newSigningKey()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(s.Dir, signingKeyFile)
	if err := WriteFile(path, b, 0o600); err != nil {
		return nil, err
	}
	priv, err := readSigningKey(path)
	if err != nil {
		return nil, err
	}
	keys := []string{EncodePublicKey(priv.Public().(ed25519.PublicKey)), old}
	return keys, WriteFile(s.SigningPublicFile, []byte(strings.Join(keys, "\n")+"\n"), 0o644)
}

// RotateAdminToken replaces the admin API's token. A running runtime reads
// the file again when it changes, so the old token stops working at once.
func RotateAdminToken(dataDir string) error {
	return rotateToken(dataDir, func(s *Set) string { return s.AdminTokenFile })
}

// RotateIngressToken replaces the front door's token. A running runtime
// reads the file again when it changes, so the old token stops working at
// once.
func RotateIngressToken(dataDir string) error {
	return rotateToken(dataDir, func(s *Set) string { return s.IngressTokenFile })
}

// rotateToken writes a new token into the file of the data dir's keys that
// file names.
func rotateToken(dataDir string, file func(*Set) string) error {
	s, err := Ensure(dataDir, nil)
	if err != nil {
		return err
	}
	b, err := newToken()
	if err != nil {
		return err
	}
	return WriteFile(file(s), b, 0o600)
}

// RotateNKey replaces the nkey of an identity ("runtime", "client" or a
// user's name). The embedded server knows the identities it started with:
// the new key works, and the old one stops working, when the runtime
// restarts.
func RotateNKey(dataDir, name string) (Identity, error) {
	s, err := Ensure(dataDir, nil)
	if err != nil {
		return Identity{}, err
	}
	file := filepath.Join(s.Dir, name+".nk")
	if name != Runtime && name != Client {
		file = UserSeedFile(s.Dir, name)
		if _, err := os.Stat(file); err != nil {
			return Identity{}, fmt.Errorf("no identity %q in %s: the identities are %s", name, s.Dir, strings.Join(Names(s.Dir), ", "))
		}
	}
	b, err := newNKey()
	if err != nil {
		return Identity{}, err
	}
	if err := WriteFile(file, b, 0o600); err != nil {
		return Identity{}, err
	}
	return readIdentity(name, file)
}

// Names lists the identities whose seeds are in a secrets dir.
func Names(secretsDir string) []string {
	names := []string{Runtime, Client}
	entries, _ := os.ReadDir(filepath.Join(secretsDir, usersDir))
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".nk"); ok {
			names = append(names, n)
		}
	}
	slices.Sort(names[2:])
	return names
}

// WriteFile writes path atomically with mode perm: a reader sees the old
// content or the new, never a part.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("secrets: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("secrets: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("secrets: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	return nil
}
