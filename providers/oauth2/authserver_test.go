package oauth2

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// authServer stands in for an OAuth 2.0 authorization server such as Auth0
// or Okta, with a resource server that accepts its tokens. It speaks the
// real protocol over TLS, with a certificate issued by a test CA written to
// caFile:
//
//   - POST /token (RFC 6749 §4.4): authenticates the client by the method it
//     is registered for (client_secret_basic or client_secret_post; a wrong
//     secret or method is 401 invalid_client), grants only the client's
//     scopes (else 400 invalid_scope) and audiences (else 403
//     access_denied, as Auth0 answers), and issues random tokens with the
//     client's expires_in;
//   - POST /revoke (RFC 7009): authenticates the client the same way and
//     revokes its token; an unknown token is success;
//   - GET /resource: a protected resource that accepts only a live token as
//     a Bearer credential (RFC 6750);
//   - /canned/NAME: answers that a broken or hostile server gives, for the
//     error tests; several echo the request, client secret included.
type authServer struct {
	srv    *httptest.Server
	caFile string
	// other is a second server, on another host name, that only counts the
	// requests it gets: a redirect must not deliver the secret there.
	other *httptest.Server

	// hung receives a value when /canned/hang or /canned/hang-body has a
	// request, which it holds until the client gives up.
	hung chan struct{}

	mu        sync.Mutex
	clients   map[string]*testClient
	tokens    map[string]tokenGrant
	lastForm  url.Values
	tokenReqs int
	otherHits int
}

type testClient struct {
	secret    string
	method    string // "basic" or "post"
	scopes    []string
	audiences []string // when set, an audience is required
	expiresIn int      // 0: the response has no expires_in
}

type tokenGrant struct {
	client    string
	expiresAt time.Time
}

func newAuthServer(t testing.TB) *authServer {
	t.Helper()
	dir := t.TempDir()
	ca, caKey := newCA(t)
	s := &authServer{
		caFile:  filepath.Join(dir, "ca.pem"),
		clients: map[string]*testClient{},
		tokens:  map[string]tokenGrant{},
		hung:    make(chan struct{}, 1),
	}
	if err := os.WriteFile(s.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/token", s.token)
	mux.HandleFunc("/revoke", s.revoke)
	mux.HandleFunc("/resource", s.resource)
	mux.HandleFunc("/canned/{name}", s.canned)
	s.srv = httptest.NewUnstartedServer(mux)
	s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{leafCert(t, ca, caKey, "127.0.0.1")}}
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)

	s.other = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.otherHits++
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"access_token": "stolen", "expires_in": 60})
	}))
	s.other.TLS = &tls.Config{Certificates: []tls.Certificate{leafCert(t, ca, caKey, "localhost")}}
	s.other.StartTLS()
	t.Cleanup(s.other.Close)
	return s
}

// url returns the server's address for path.
func (s *authServer) url(path string) string { return s.srv.URL + path }

// otherURL returns the second server's address for path, by host name.
func (s *authServer) otherURL(path string) string {
	_, port, _ := net.SplitHostPort(s.other.Listener.Addr().String())
	return "https://localhost:" + port + path
}

func (s *authServer) addClient(id string, c testClient) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[id] = &c
}

// rotate changes a client's secret, as an administrator does in the
// server's console.
func (s *authServer) rotate(id, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[id].secret = secret
}

func (s *authServer) stats() (form url.Values, tokenReqs, otherHits int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastForm, s.tokenReqs, s.otherHits
}

// oauthError writes an RFC 6749 §5.2 error response.
func oauthError(w http.ResponseWriter, status int, code, description string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="token"`)
	}
	writeJSON(w, status, map[string]string{"error": code, "error_description": description})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// authenticate checks the client's credentials (RFC 6749 §2.3.1) against
// its registration, and returns its id, or writes the error response.
func (s *authServer) authenticate(w http.ResponseWriter, r *http.Request) (string, *testClient, bool) {
	user, pass, basic := r.BasicAuth()
	var id, secret, method string
	switch {
	case basic && r.PostForm.Has("client_secret"):
		oauthError(w, http.StatusBadRequest, "invalid_request", "more than one client authentication method")
		return "", nil, false
	case basic:
		var err1, err2 error
		id, err1 = url.QueryUnescape(user)
		secret, err2 = url.QueryUnescape(pass)
		if err1 != nil || err2 != nil {
			oauthError(w, http.StatusBadRequest, "invalid_request", "malformed Basic credentials")
			return "", nil, false
		}
		method = "basic"
	case r.PostForm.Has("client_secret"):
		id, secret, method = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret"), "post"
	default:
		oauthError(w, http.StatusUnauthorized, "invalid_client", "client authentication required")
		return "", nil, false
	}
	s.mu.Lock()
	c, ok := s.clients[id]
	var want string
	if ok {
		want = c.secret
	}
	s.mu.Unlock()
	if !ok || subtle.ConstantTimeCompare([]byte(secret), []byte(want)) != 1 || method != c.method {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "Client authentication failed")
		return "", nil, false
	}
	return id, c, true
}

func (s *authServer) token(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "malformed form")
		return
	}
	s.mu.Lock()
	s.tokenReqs++
	s.lastForm = r.PostForm
	s.mu.Unlock()
	if gt := r.PostForm.Get("grant_type"); gt != "client_credentials" {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "grant type "+gt+" is not supported")
		return
	}
	id, c, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	scopes := strings.Fields(r.PostForm.Get("scope"))
	for _, sc := range scopes {
		if !slices.Contains(c.scopes, sc) {
			oauthError(w, http.StatusBadRequest, "invalid_scope", "scope "+sc+" is not allowed for this client")
			return
		}
	}
	if len(c.audiences) > 0 {
		aud := r.PostForm.Get("audience")
		if !slices.Contains(c.audiences, aud) {
			oauthError(w, http.StatusForbidden, "access_denied", "Service not enabled within domain: "+aud)
			return
		}
	}
	var b [32]byte
	_, _ = rand.Read(b[:])
	tok := base64.RawURLEncoding.EncodeToString(b[:])
	life := time.Duration(c.expiresIn) * time.Second
	if c.expiresIn == 0 {
		life = time.Hour
	}
	s.mu.Lock()
	s.tokens[tok] = tokenGrant{client: id, expiresAt: time.Now().Add(life)}
	s.mu.Unlock()
	resp := map[string]any{"access_token": tok, "token_type": "bearer", "scope": strings.Join(scopes, " ")}
	if c.expiresIn != 0 {
		resp["expires_in"] = c.expiresIn
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *authServer) revoke(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "malformed form")
		return
	}
	id, _, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	tok := r.PostForm.Get("token")
	if tok == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "token is required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// RFC 7009 §2.2: an invalid token is answered with 200; a client may
	// revoke only its own tokens.
	if g, ok := s.tokens[tok]; ok && g.client == id {
		delete(s.tokens, tok)
	}
	w.WriteHeader(http.StatusOK)
}

func (s *authServer) resource(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	g, known := s.tokens[tok]
	s.mu.Unlock()
	if !ok || !known || !time.Now().Before(g.expiresAt) {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		http.Error(w, "invalid token", http.StatusUnauthorized)
		return
	}
	fmt.Fprintf(w, "hello %s\n", g.client)
}

// canned answers as broken or hostile servers do. echo is the request as
// such a server might repeat it: its body and Authorization header.
func (s *authServer) canned(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	echo := string(body) + " " + r.Header.Get("Authorization")
	switch r.PathValue("name") {
	case "server-error":
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, "internal error handling %s", echo)
	case "echo-error":
		oauthError(w, http.StatusBadRequest, "invalid_request", "could not parse "+echo)
	case "hostile-error":
		oauthError(w, http.StatusBadRequest, "invalid_request\x1b[31m\n", "bad\r\nrequest\x00 "+strings.Repeat("x", 500)+echo)
	case "form-error":
		w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, url.Values{"error": {"invalid_client"}, "error_description": {"unknown client " + echo}}.Encode())
	case "error-in-200":
		oauthError(w, http.StatusOK, "invalid_scope", "no scopes for you")
	case "not-json":
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, "<html>welcome %s</html>", echo)
	case "bad-expires":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"tok-%x","expires_in":%q}`, body, "soon "+echo)
	case "no-token":
		writeJSON(w, http.StatusOK, map[string]any{"token_type": "Bearer", "expires_in": 60})
	case "expired":
		writeJSON(w, http.StatusOK, map[string]any{"access_token": "expired-token-0123", "expires_in": -30})
	case "header-injection":
		writeJSON(w, http.StatusOK, map[string]any{"access_token": "abc\r\nX-Injected: 1", "expires_in": 60})
	case "redirect-same":
		http.Redirect(w, r, "/token", http.StatusTemporaryRedirect)
	case "redirect-other":
		http.Redirect(w, r, s.otherURL("/token"), http.StatusTemporaryRedirect)
	case "redirect-loop":
		http.Redirect(w, r, r.URL.Path, http.StatusTemporaryRedirect)
	case "hang":
		select {
		case s.hung <- struct{}{}:
		default:
		}
		<-r.Context().Done()
	case "hang-body": // the status and headers, then no body until the client gives up
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, `{"access_token":`)
		w.(http.Flusher).Flush()
		select {
		case s.hung <- struct{}{}:
		default:
		}
		<-r.Context().Done()
	case "revoke-unavailable":
		w.Header().Set("Retry-After", "30")
		oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "revocation is down "+echo)
	default:
		http.NotFound(w, r)
	}
}

func newCA(t testing.TB) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "credbroker oauth2 test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// leafCert issues a server certificate for host (an IP address or a name).
func leafCert(t testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, host string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
