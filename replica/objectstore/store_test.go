package objectstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/regent-dev/regent/internal/s3server"
	"github.com/regent-dev/regent/replica/objectstore"
)

// startServer runs a real versitygw with one bucket.
func startServer(t *testing.T) *s3server.Server {
	t.Helper()
	if testing.Short() {
		t.Skip("runs an S3 server")
	}
	srv, err := s3server.Start(t.TempDir(), s3server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	if err := srv.MakeBucket("backups"); err != nil {
		t.Fatal(err)
	}
	return srv
}

func open(t *testing.T, srv *s3server.Server, mod func(*objectstore.Config)) *objectstore.Store {
	t.Helper()
	cfg := objectstore.Config{Endpoint: srv.Endpoint, Bucket: "backups", Path: "ns/db", Region: "us-east-1",
		AccessKeyID: s3server.AccessKey, SecretAccessKey: s3server.SecretKey}
	if mod != nil {
		mod(&cfg)
	}
	s, err := objectstore.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestObjectsComeBackAsTheyWentIn(t *testing.T) {
	srv := startServer(t)
	s := open(t, srv, nil)
	ctx := context.Background()
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}

	// A WAL segment's worth: mostly zeros, some noise.
	seg := make([]byte, 16<<20)
	_, _ = rand.Read(seg[:1<<20])
	obj, err := s.PutSmall(ctx, "wal/000000010000000000000001.zst", seg)
	if err != nil {
		t.Fatal(err)
	}
	if obj.Size >= obj.RawSize/4 {
		t.Errorf("a mostly empty segment stored in %d bytes of %d: not compressed", obj.Size, obj.RawSize)
	}
	st, err := s.Stat(ctx, "wal/000000010000000000000001.zst")
	if err != nil {
		t.Fatal(err)
	}
	if st.SHA256 != obj.SHA256 || st.RawSize != int64(len(seg)) {
		t.Errorf("stat = %+v, want the SHA-256 and size of the put %+v", st, obj)
	}
	if _, err := os.Stat(srv.ObjectPath("backups", "ns/db/wal/000000010000000000000001.zst")); err != nil {
		t.Errorf("the object is not under the path: %v", err)
	}
	got := read(t, s, "wal/000000010000000000000001.zst", "")
	if !bytes.Equal(got, seg) {
		t.Fatal("the segment came back different")
	}

	// A stream of unknown size, larger than a part.
	big := make([]byte, 40<<20)
	_, _ = rand.Read(big)
	sobj, err := s.PutStream(ctx, "base/b1/data.tar.zst", bytes.NewReader(big), objectstore.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sobj.RawSize != int64(len(big)) {
		t.Errorf("stream raw size %d, want %d", sobj.RawSize, len(big))
	}
	if got := read(t, s, "base/b1/data.tar.zst", sobj.SHA256); !bytes.Equal(got, big) {
		t.Fatal("the stream came back different")
	}

	objs, err := s.List(ctx, "wal/")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Key != "wal/000000010000000000000001.zst" {
		t.Errorf("list wal/ = %+v", objs)
	}
	if err := s.Remove(ctx, "wal/000000010000000000000001.zst", "wal/gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "wal/000000010000000000000001.zst"); !errors.Is(err, objectstore.ErrNotFound) {
		t.Errorf("stat after remove: %v, want ErrNotFound", err)
	}
}

func read(t *testing.T, s *objectstore.Store, key, sha string) []byte {
	t.Helper()
	r, err := s.Get(context.Background(), key, sha)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestACorruptObjectIsRefused(t *testing.T) {
	srv := startServer(t)
	s := open(t, srv, nil)
	ctx := context.Background()
	data := bytes.Repeat([]byte("regent "), 100000)
	if _, err := s.PutSmall(ctx, "wal/000000010000000000000002.zst", data); err != nil {
		t.Fatal(err)
	}
	// Flip a byte of the stored file, behind the server's back.
	p := srv.ObjectPath("backups", "ns/db/wal/000000010000000000000002.zst")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := s.Get(ctx, "wal/000000010000000000000002.zst", "")
	if err == nil {
		_, err = io.ReadAll(r)
		r.Close()
	}
	if !errors.Is(err, objectstore.ErrCorrupt) {
		t.Fatalf("reading a corrupted object: %v, want ErrCorrupt", err)
	}
	t.Log(err)
}

func TestWrongCredentialsBucketsAndDownStoresAreNamed(t *testing.T) {
	srv := startServer(t)
	ctx := context.Background()
	cases := []struct {
		name string
		mod  func(*objectstore.Config)
		want error
	}{
		{"wrong secret", func(c *objectstore.Config) { c.SecretAccessKey = "nope" }, objectstore.ErrCredentials},
		{"unknown key", func(c *objectstore.Config) { c.AccessKeyID = "nobody" }, objectstore.ErrCredentials},
		{"no such bucket", func(c *objectstore.Config) { c.Bucket = "missing" }, objectstore.ErrNoBucket},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := open(t, srv, tc.mod).Check(ctx)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Check = %v, want %v", err, tc.want)
			}
			t.Log(err)
		})
	}
	t.Run("server down", func(t *testing.T) {
		s := open(t, srv, nil)
		srv.Stop()
		err := s.Check(ctx)
		if !errors.Is(err, objectstore.ErrUnreachable) {
			t.Fatalf("Check = %v, want ErrUnreachable", err)
		}
		t.Log(err)
		if err := srv.Restart(); err != nil {
			t.Fatal(err)
		}
		if err := s.Check(ctx); err != nil {
			t.Fatalf("after the restart: %v", err)
		}
	})
	for _, bad := range []objectstore.Config{
		{Endpoint: "s3.example.com", Bucket: "b", AccessKeyID: "a", SecretAccessKey: "s"},
		{Endpoint: "https://s3.example.com/path", Bucket: "b", AccessKeyID: "a", SecretAccessKey: "s"},
		{Endpoint: "https://s3.example.com", AccessKeyID: "a", SecretAccessKey: "s"},
		{Endpoint: "https://s3.example.com", Bucket: "b"},
		{Endpoint: "https://s3.example.com", Bucket: "b", AccessKeyID: "a", SecretAccessKey: "s", CA: []byte("not pem")},
	} {
		if _, err := objectstore.Open(bad); err == nil {
			t.Errorf("Open(%+v) accepted it", bad)
		}
	}
}
