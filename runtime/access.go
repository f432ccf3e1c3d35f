package runtime

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/twinflow/twinflow/runtime/runinfo"
	"github.com/twinflow/twinflow/runtime/secrets"
	"github.com/twinflow/twinflow/runtime/spec"
)

// Access is how clients reach the engine and which credentials they use:
// what twinflow run writes into the runtime file. With an external NATS
// server the NATS credentials are the operator's, and left empty.
func (e *Engine) Access() runinfo.Info {
	info := runinfo.Info{
		Version:        1,
		DataDir:        filepath.Dir(e.keys.Dir),
		NATSURL:        e.NATSURL(),
		AdminURL:       e.AdminURL(),
		AdminTokenFile: e.keys.AdminTokenFile,
		SigningKeys:    e.SigningKeys(),
	}
	if e.server != nil {
		info.NATSURL = e.server.ClientURL()
		info.NATSCreds, info.NATSInboxPrefix = e.keys.Client.SeedFile, ClientInboxPrefix
		info.NATSCA = absOrEmpty(e.cfg.NATSTLSCertFile)
		info.MQTTURL = e.server.MQTTURL()
	}
	info.AdminCA = absOrEmpty(e.cfg.AdminTLSCertFile)
	if u := e.IngressURL(); u != "" {
		info.IngressURL, info.IngressTokenFile = u, e.keys.IngressTokenFile
		info.IngressCA = absOrEmpty(e.cfg.IngressTLSCertFile)
	}
	return info
}

// SigningKeys are the public keys of the key the engine signs function
// calls with, as endpoints take them (base64 of the raw Ed25519 key).
func (e *Engine) SigningKeys() []string {
	return []string{secrets.EncodePublicKey(e.keys.Signing.Public().(ed25519.PublicKey))}
}

// serveSigningKeys answers the public signing keys, one a line: public
// information, served without the token so that endpoints can fetch it.
func (e *Engine) serveSigningKeys(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte(strings.Join(e.SigningKeys(), "\n") + "\n"))
}

// endpointTLS loads the TLS settings of the module's https:// endpoints,
// by URL.
func endpointTLS(m *spec.Module) (map[string]*tls.Config, error) {
	out := map[string]*tls.Config{}
	for i, ep := range m.Endpoints {
		if ep.TLS == nil {
			continue
		}
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if ep.TLS.CA != "" {
			pool, err := certPool(ep.TLS.CA)
			if err != nil {
				return nil, fmt.Errorf("endpoints[%d] (%s) tls.ca: %w", i, ep.URL, err)
			}
			cfg.RootCAs = pool
		}
		if ep.TLS.Cert != "" {
			cert, err := tls.LoadX509KeyPair(ep.TLS.Cert, ep.TLS.Key)
			if err != nil {
				return nil, fmt.Errorf("endpoints[%d] (%s) tls.cert and tls.key: %w", i, ep.URL, err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		out[ep.URL] = cfg
	}
	return out, nil
}

// selfTLS is the runtime's client configuration for its own embedded
// server: it trusts the server's certificate itself, and checks it against
// the first name the certificate holds rather than the address dialled.
func selfTLS(cert tls.Certificate) (*tls.Config, error) {
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	name := leaf.Subject.CommonName
	switch {
	case len(leaf.DNSNames) > 0:
		name = leaf.DNSNames[0]
	case len(leaf.IPAddresses) > 0:
		name = leaf.IPAddresses[0].String()
	}
	return &tls.Config{RootCAs: pool, ServerName: name, MinVersion: tls.VersionTLS12}, nil
}

func absOrEmpty(path string) string {
	if path == "" {
		return ""
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return path
	}
	return abs
}
