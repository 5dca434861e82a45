// Command image-builder writes a minimal container image as an OCI image-layout archive (a tar of
// oci-layout, index.json and blobs/sha256/...), without a container daemon. `ctr images import`
// loads it; the reference is taken from the index's io.containerd.image.name annotation.
//
// The image has one layer: the given files (root-owned), their parent directories, /tmp, and an
// /etc/passwd and /etc/group that name the non-root user. Everything that could vary between two
// builds of the same inputs is fixed: entries are sorted, every timestamp is --epoch, owners are
// 0:0 without names, gzip carries no name or time, JSON is written by encoding/json (struct field
// order, sorted map keys). The same inputs therefore give the same digest.
//
//	image-builder --name REF --out FILE --epoch SECONDS --user UID:GID \
//	  --file SRC=/DEST [--file ...] --entrypoint /DEST [--label KEY=VALUE ...] [--env KEY=VALUE ...]
//
// It prints the manifest digest (the image's digest) on stdout.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type imageConfig struct {
	User       string            `json:"User,omitempty"`
	Env        []string          `json:"Env,omitempty"`
	Entrypoint []string          `json:"Entrypoint,omitempty"`
	WorkingDir string            `json:"WorkingDir,omitempty"`
	Labels     map[string]string `json:"Labels,omitempty"`
}

type history struct {
	Created   string `json:"created"`
	CreatedBy string `json:"created_by"`
}

type config struct {
	Created      string      `json:"created"`
	Architecture string      `json:"architecture"`
	OS           string      `json:"os"`
	Config       imageConfig `json:"config"`
	RootFS       struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
	History []history `json:"history"`
}

type manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	Config        descriptor        `json:"config"`
	Layers        []descriptor      `json:"layers"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

// entry is one file or directory of the layer.
type entry struct {
	path string // relative, no leading slash; directories end without a slash
	dir  bool
	mode int64
	data []byte
}

func main() {
	var files, labels, env, entrypoint multi
	name := flag.String("name", "", "image reference, e.g. ghcr.io/datajob-dev/datajob-operator:0.1.0")
	out := flag.String("out", "", "archive to write")
	epoch := flag.Int64("epoch", -1, "timestamp of every entry and of the image, in Unix seconds (default $SOURCE_DATE_EPOCH, else 0)")
	user := flag.String("user", "65532:65532", "UID:GID the image runs as")
	flag.Var(&files, "file", "SRC=/DEST: a file of the image (mode 0755 when SRC is executable, else 0644); repeatable")
	flag.Var(&entrypoint, "entrypoint", "an element of the entrypoint; repeatable")
	flag.Var(&labels, "label", "KEY=VALUE: an image label (also a manifest annotation); repeatable")
	flag.Var(&env, "env", "KEY=VALUE: an environment variable of the image; repeatable")
	flag.Parse()
	if *name == "" || *out == "" || len(files) == 0 || len(entrypoint) == 0 {
		fail("usage: image-builder --name REF --out FILE --file SRC=/DEST --entrypoint /DEST [flags]; see -h")
	}
	if strings.HasSuffix(*name, ":latest") || !strings.Contains(path.Base(*name), ":") {
		fail("--name %s: give an explicit tag other than latest (latest makes kubelets pull)", *name)
	}
	if *epoch < 0 {
		*epoch = 0
		if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				fail("SOURCE_DATE_EPOCH=%s: %v", s, err)
			}
			*epoch = v
		}
	}
	uid, gid, ok := strings.Cut(*user, ":")
	if !ok || uid == "0" {
		fail("--user %s: give a non-root UID:GID", *user)
	}
	when := time.Unix(*epoch, 0).UTC()

	entries := map[string]entry{}
	addDir := func(p string, mode int64) {
		if _, ok := entries[p]; !ok {
			entries[p] = entry{path: p, dir: true, mode: mode}
		}
	}
	addFile := func(p string, mode int64, data []byte) {
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			addDir(dir, 0o755)
		}
		if _, dup := entries[p]; dup {
			fail("%s is given twice", p)
		}
		entries[p] = entry{path: p, mode: mode, data: data}
	}
	for _, f := range files {
		src, dest, ok := strings.Cut(f, "=")
		if !ok || !strings.HasPrefix(dest, "/") {
			fail("--file %s: want SRC=/DEST", f)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			fail("--file %s: %v", f, err)
		}
		info, err := os.Stat(src)
		if err != nil {
			fail("--file %s: %v", f, err)
		}
		mode := int64(0o644)
		if info.Mode()&0o111 != 0 {
			mode = 0o755
		}
		addFile(strings.TrimPrefix(path.Clean(dest), "/"), mode, data)
	}
	addFile("etc/passwd", 0o644, fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/home/nonroot:/sbin/nologin\n", uid, gid))
	addFile("etc/group", 0o644, fmt.Appendf(nil, "root:x:0:\nnonroot:x:%s:\n", gid))
	addDir("tmp", 0o1777)

	layer := writeLayer(entries, when)
	gz := gzipped(layer)
	labelMap := keyValues(labels, "--label")
	cfg := config{
		Created:      when.Format(time.RFC3339),
		Architecture: "amd64",
		OS:           "linux",
		Config: imageConfig{
			User:       *user,
			Env:        env,
			Entrypoint: entrypoint,
			WorkingDir: "/",
			Labels:     labelMap,
		},
		History: []history{{Created: when.Format(time.RFC3339), CreatedBy: "hack/image.sh (hack/image-builder)"}},
	}
	cfg.RootFS.Type = "layers"
	cfg.RootFS.DiffIDs = []string{digest(layer)}
	cfgJSON := mustJSON(cfg)

	blobs := map[string][]byte{}
	put := func(data []byte) string {
		d := digest(data)
		blobs[strings.TrimPrefix(d, "sha256:")] = data
		return d
	}
	m := manifest{
		SchemaVersion: 2,
		MediaType:     "application/vnd.oci.image.manifest.v1+json",
		Config:        descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: put(cfgJSON), Size: int64(len(cfgJSON))},
		Layers:        []descriptor{{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Digest: put(gz), Size: int64(len(gz))}},
		Annotations:   labelMap,
	}
	manifestJSON := mustJSON(m)
	manifestDigest := put(manifestJSON)
	tag := (*name)[strings.LastIndex(*name, ":")+1:]
	idx := index{
		SchemaVersion: 2,
		MediaType:     "application/vnd.oci.image.index.v1+json",
		Manifests: []descriptor{{
			MediaType: "application/vnd.oci.image.manifest.v1+json",
			Digest:    manifestDigest,
			Size:      int64(len(manifestJSON)),
			Annotations: map[string]string{
				"io.containerd.image.name":          *name,
				"org.opencontainers.image.ref.name": tag,
			},
			Platform: &platform{Architecture: "amd64", OS: "linux"},
		}},
	}

	archive := map[string][]byte{
		"oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`),
		"index.json": mustJSON(idx),
	}
	for hexDigest, data := range blobs {
		archive["blobs/sha256/"+hexDigest] = data
	}
	if err := writeArchive(*out, archive, when); err != nil {
		fail("write %s: %v", *out, err)
	}
	fmt.Println(manifestDigest)
}

// sortedKeys returns the keys of m in byte order (the archives' entries are sorted so the same
// input gives the same bytes).
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func writeLayer(entries map[string]entry, when time.Time) []byte {
	paths := sortedKeys(entries)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		e := entries[p]
		hdr := &tar.Header{Name: p, Mode: e.mode, ModTime: when, Format: tar.FormatPAX}
		if e.dir {
			hdr.Typeflag = tar.TypeDir
			hdr.Name = p + "/"
		} else {
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(e.data))
		}
		check(tw.WriteHeader(hdr))
		if !e.dir {
			_, err := tw.Write(e.data)
			check(err)
		}
	}
	check(tw.Close())
	return buf.Bytes()
}

// writeArchive writes the OCI layout as a tar (directories first, everything sorted) to a
// temporary file and renames it into place.
func writeArchive(out string, files map[string][]byte, when time.Time) error {
	names := sortedKeys(files)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: when, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	for _, n := range names {
		data := files[n]
		if err := tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: when, Format: tar.FormatPAX}); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

func gzipped(data []byte) []byte {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	check(err)
	_, err = zw.Write(data)
	check(err)
	check(zw.Close())
	return buf.Bytes()
}

func keyValues(pairs []string, flagName string) map[string]string {
	if len(pairs) == 0 {
		return nil
	}
	out := map[string]string{}
	for _, kv := range pairs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			fail("%s %s: want KEY=VALUE", flagName, kv)
		}
		out[k] = v
	}
	return out
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func mustJSON(v any) []byte {
	data, err := json.Marshal(v)
	check(err)
	return data
}

func check(err error) {
	if err != nil {
		fail("%v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "image-builder: "+format+"\n", args...)
	os.Exit(1)
}
