// Package objectstore is a cluster's place in S3-compatible object storage
// (docs/backup.md): WAL files and base backups, compressed with zstd and
// checked with SHA-256 on the way back. It wraps minio-go and turns the
// store's refusals into errors a person can act on.
package objectstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Config says where a cluster's objects live and how to reach them.
type Config struct {
	// Endpoint is the store's URL: https://host[:port] or http://host[:port].
	Endpoint string `json:"endpoint"`
	Bucket   string `json:"bucket"`
	// Path is the prefix of every key, without a leading or trailing slash.
	Path   string `json:"path,omitempty"`
	Region string `json:"region,omitempty"`
	// AccessKeyID and SecretAccessKey sign every request.
	AccessKeyID     string `json:"-"`
	SecretAccessKey string `json:"-"`
	// CA, PEM, is trusted besides the system's roots.
	CA []byte `json:"-"`
}

// Errors a caller tells apart; each comes wrapped with the store's words.
var (
	ErrNotFound    = errors.New("not in the object store")
	ErrCorrupt     = errors.New("corrupt object")
	ErrCredentials = errors.New("the object store refused the credentials")
	ErrNoBucket    = errors.New("the bucket does not exist")
	ErrUnreachable = errors.New("the object store is unreachable")
)

// Metadata keys (x-amz-meta-*): the SHA-256 and size of an object's
// uncompressed content.
const (
	metaSHA256 = "Regent-Sha256"
	metaSize   = "Regent-Size"
)

// Object is one stored object.
type Object struct {
	// Key is relative to the store's Path.
	Key string `json:"key"`
	// Size is what the store holds (compressed).
	Size int64 `json:"size"`
	// RawSize and SHA256 are of the uncompressed content.
	RawSize  int64     `json:"rawSize,omitempty"`
	SHA256   string    `json:"sha256,omitempty"`
	Modified time.Time `json:"modified,omitzero"`
}

// Store is one cluster's place in a bucket.
type Store struct {
	cfg    Config
	client *minio.Client
	enc    *zstd.Encoder
}

// Open checks cfg and returns a Store; it sends nothing (Check does).
func Open(cfg Config) (*Store, error) {
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("object store endpoint %q: want http(s)://host[:port]", cfg.Endpoint)
	}
	if cfg.Bucket == "" {
		return nil, errors.New("object store: no bucket")
	}
	if cfg.AccessKeyID == "" || cfg.SecretAccessKey == "" {
		return nil, errors.New("object store: the access key ID or secret access key is empty")
	}
	cfg.Path = strings.Trim(cfg.Path, "/")
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.ResponseHeaderTimeout = time.Minute
	if len(cfg.CA) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(cfg.CA) {
			return nil, errors.New("object store: the CA holds no PEM certificate")
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	client, err := minio.New(u.Host, &minio.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKeyID, cfg.SecretAccessKey, ""),
		Secure:    u.Scheme == "https",
		Region:    cfg.Region,
		Transport: transport,
		// Path-style keys work with every S3-compatible server.
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   3,
	})
	if err != nil {
		return nil, fmt.Errorf("object store: %w", err)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	return &Store{cfg: cfg, client: client, enc: enc}, nil
}

// Config is the store's configuration, without the secrets.
func (s *Store) Config() Config {
	return Config{Endpoint: s.cfg.Endpoint, Bucket: s.cfg.Bucket, Path: s.cfg.Path, Region: s.cfg.Region}
}

// Where names the store's place for messages: s3://bucket/path at endpoint.
func (s *Store) Where() string {
	return fmt.Sprintf("s3://%s/%s at %s", s.cfg.Bucket, s.cfg.Path, s.cfg.Endpoint)
}

func (s *Store) key(k string) string {
	if s.cfg.Path == "" {
		return k
	}
	return s.cfg.Path + "/" + k
}

// Check reaches the store and lists one key of the path (a GET, whose
// error body names the problem, unlike a HEAD's), so that a wrong
// endpoint, credential or bucket shows before the first WAL file needs
// it.
func (s *Store) Check(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	info, ok := <-s.client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: s.key(""), MaxKeys: 1})
	if ok && info.Err != nil {
		return s.explain(info.Err, "check")
	}
	return nil
}

// PutSmall stores data, compressed, with its SHA-256 and size as metadata
// (a WAL file: callers Stat first, so as not to upload one twice).
func (s *Store) PutSmall(ctx context.Context, key string, data []byte) (Object, error) {
	sum := sha256.Sum256(data)
	packed := s.enc.EncodeAll(data, make([]byte, 0, len(data)/4))
	obj := Object{Key: key, Size: int64(len(packed)), RawSize: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
	_, err := s.client.PutObject(ctx, s.cfg.Bucket, s.key(key), bytes.NewReader(packed), int64(len(packed)), minio.PutObjectOptions{
		ContentType:      "application/zstd",
		UserMetadata:     map[string]string{metaSHA256: obj.SHA256, metaSize: strconv.Itoa(len(data))},
		SendContentMd5:   true,
		DisableMultipart: true,
	})
	return obj, s.explain(err, "put "+key)
}

// PutPlain stores data as it is (manifests, for people to read too).
func (s *Store) PutPlain(ctx context.Context, key string, data []byte, contentType string) (Object, error) {
	sum := sha256.Sum256(data)
	obj := Object{Key: key, Size: int64(len(data)), RawSize: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
	_, err := s.client.PutObject(ctx, s.cfg.Bucket, s.key(key), bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{
		ContentType:      contentType,
		UserMetadata:     map[string]string{metaSHA256: obj.SHA256, metaSize: strconv.Itoa(len(data))},
		SendContentMd5:   true,
		DisableMultipart: true,
	})
	return obj, s.explain(err, "put "+key)
}

// StreamOptions shape a streamed upload.
type StreamOptions struct {
	// SizeHint is the expected uncompressed size; it picks the part size
	// (S3 allows 10 000 parts).
	SizeHint int64
	// Level is zstd's; zero is SpeedFastest, which keeps up with a disk.
	Level zstd.EncoderLevel
	// Threads compress and upload in parallel; zero is 2.
	Threads int
}

// PutStream compresses r into the store as one multipart object. The
// SHA-256 of r's bytes is known only at the end, so it is returned (for a
// manifest to record) rather than stored as metadata.
func (s *Store) PutStream(ctx context.Context, key string, r io.Reader, opts StreamOptions) (Object, error) {
	threads := opts.Threads
	if threads <= 0 {
		threads = 2
	}
	level := opts.Level
	if level == 0 {
		level = zstd.SpeedFastest
	}
	const minPart = 16 << 20
	part := max(int64(minPart), opts.SizeHint/8000)

	pr, pw := io.Pipe()
	raw := &counter{h: sha256.New()}
	go func() {
		enc, err := zstd.NewWriter(pw, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(threads))
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		_, err = io.Copy(enc, io.TeeReader(r, raw))
		if cerr := enc.Close(); err == nil {
			err = cerr
		}
		pw.CloseWithError(err)
	}()
	info, err := s.client.PutObject(ctx, s.cfg.Bucket, s.key(key), pr, -1, minio.PutObjectOptions{
		ContentType: "application/zstd",
		PartSize:    uint64(part),
		NumThreads:  uint(threads),
	})
	_ = pr.CloseWithError(errors.New("upload ended"))
	if err != nil {
		return Object{}, s.explain(err, "put "+key)
	}
	return Object{Key: key, Size: info.Size, RawSize: raw.n, SHA256: hex.EncodeToString(raw.h.Sum(nil))}, nil
}

// Stat returns what the store holds under key, or ErrNotFound.
func (s *Store) Stat(ctx context.Context, key string) (Object, error) {
	info, err := s.client.StatObject(ctx, s.cfg.Bucket, s.key(key), minio.StatObjectOptions{})
	if err != nil {
		return Object{}, s.explain(err, "stat "+key)
	}
	return s.object(key, info), nil
}

func (s *Store) object(key string, info minio.ObjectInfo) Object {
	o := Object{Key: key, Size: info.Size, Modified: info.LastModified}
	if v := info.UserMetadata[metaSHA256]; v != "" {
		o.SHA256 = v
	}
	if v, err := strconv.ParseInt(info.UserMetadata[metaSize], 10, 64); err == nil {
		o.RawSize = v
	}
	return o
}

// Get returns the uncompressed content of a compressed object. The reader
// fails with ErrCorrupt when the content does not decompress or its
// SHA-256 differs from sha (from the object's metadata when sha is empty)
// at the end.
func (s *Store) Get(ctx context.Context, key, sha string) (io.ReadCloser, error) {
	obj, err := s.client.GetObject(ctx, s.cfg.Bucket, s.key(key), minio.GetObjectOptions{})
	if err != nil {
		return nil, s.explain(err, "get "+key)
	}
	info, err := obj.Stat()
	if err != nil {
		_ = obj.Close()
		return nil, s.explain(err, "get "+key)
	}
	if sha == "" {
		sha = info.UserMetadata[metaSHA256]
	}
	dec, err := zstd.NewReader(obj, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		_ = obj.Close()
		return nil, err
	}
	return &verifier{key: key, want: sha, r: dec, h: sha256.New(), close: func() error {
		dec.Close()
		return obj.Close()
	}, store: s}, nil
}

// GetPlain returns an uncompressed object's content, checked against its
// metadata's SHA-256.
func (s *Store) GetPlain(ctx context.Context, key string) ([]byte, error) {
	obj, err := s.client.GetObject(ctx, s.cfg.Bucket, s.key(key), minio.GetObjectOptions{})
	if err != nil {
		return nil, s.explain(err, "get "+key)
	}
	defer obj.Close()
	data, err := io.ReadAll(obj)
	if err != nil {
		return nil, s.explain(err, "get "+key)
	}
	info, err := obj.Stat()
	if err != nil {
		return nil, s.explain(err, "get "+key)
	}
	if want := info.UserMetadata[metaSHA256]; want != "" {
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != want {
			return nil, fmt.Errorf("%s in %s: %w: its SHA-256 is not the one recorded when it was stored", key, s.Where(), ErrCorrupt)
		}
	}
	return data, nil
}

// List returns the objects whose keys start with prefix, in key order.
func (s *Store) List(ctx context.Context, prefix string) ([]Object, error) {
	var out []Object
	full := s.key(prefix)
	for info := range s.client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: full, Recursive: true}) {
		if info.Err != nil {
			return nil, s.explain(info.Err, "list "+prefix)
		}
		key := info.Key
		if s.cfg.Path != "" {
			key = strings.TrimPrefix(key, s.cfg.Path+"/")
		}
		out = append(out, Object{Key: key, Size: info.Size, Modified: info.LastModified})
	}
	return out, nil
}

// Remove deletes keys; a key already gone is not an error.
func (s *Store) Remove(ctx context.Context, keys ...string) error {
	for _, k := range keys {
		if err := s.client.RemoveObject(ctx, s.cfg.Bucket, s.key(k), minio.RemoveObjectOptions{}); err != nil {
			if err = s.explain(err, "remove "+k); !errors.Is(err, ErrNotFound) {
				return err
			}
		}
	}
	return nil
}

// explain turns the store's answer into one of the package's errors,
// keeping the store's own words.
func (s *Store) explain(err error, op string) error {
	if err == nil {
		return nil
	}
	resp := minio.ToErrorResponse(err)
	where := s.Where()
	switch resp.Code {
	case "NoSuchKey", "NotFound":
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	case "NoSuchBucket":
		return fmt.Errorf("%s in %s: %w: %s", op, where, ErrNoBucket, resp.Message)
	// XAdminUserNotFound is versitygw's word for AWS's InvalidAccessKeyId.
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "XAdminUserNotFound":
		return fmt.Errorf("%s in %s: %w: %s (%s)", op, where, ErrCredentials, resp.Message, resp.Code)
	}
	var netErr net.Error
	var urlErr *url.Error
	if errors.As(err, &netErr) || errors.As(err, &urlErr) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%s in %s: %w: %w", op, where, ErrUnreachable, err)
	}
	if resp.StatusCode == http.StatusNotFound && resp.Code == "" {
		// A HEAD has no body, so no code: 404 is a missing key.
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	if resp.StatusCode == http.StatusForbidden {
		return fmt.Errorf("%s in %s: %w (HTTP 403)", op, where, ErrCredentials)
	}
	return fmt.Errorf("%s in %s: %w", op, where, err)
}

type counter struct {
	h hash.Hash
	n int64
}

func (c *counter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

// verifier checks an object's SHA-256 once its last byte is read.
type verifier struct {
	key, want string
	r         io.Reader
	h         hash.Hash
	close     func() error
	store     *Store
	done      bool
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.done {
		return 0, io.EOF
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	switch {
	case errors.Is(err, io.EOF):
		v.done = true
		if got := hex.EncodeToString(v.h.Sum(nil)); v.want != "" && got != v.want {
			return n, fmt.Errorf("%s in %s: %w: SHA-256 %s, recorded %s", v.key, v.store.Where(), ErrCorrupt, got, v.want)
		}
	case err != nil && !isTransport(err):
		return n, fmt.Errorf("%s in %s: %w: %w", v.key, v.store.Where(), ErrCorrupt, err)
	case err != nil:
		return n, v.store.explain(err, "get "+v.key)
	}
	return n, err
}

func (v *verifier) Close() error { return v.close() }

// isTransport says whether a read failed on the network rather than in
// the decompressor.
func isTransport(err error) bool {
	var netErr net.Error
	var urlErr *url.Error
	resp := minio.ToErrorResponse(err)
	return errors.As(err, &netErr) || errors.As(err, &urlErr) || resp.Code != "" || errors.Is(err, io.ErrUnexpectedEOF)
}

// Join builds a key from parts.
func Join(parts ...string) string { return path.Join(parts...) }
