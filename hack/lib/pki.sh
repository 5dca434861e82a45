# PKI for the local control plane, made with openssl (sourced by hack/cluster.sh).
# Every function is idempotent: an existing key or certificate is kept.
# shellcheck shell=bash

# ECDSA P-256 keys in PKCS#8: instant to generate, accepted by Go, kubectl and rustls.
pki_key() {
  local key=$1
  [[ -s $key ]] && return 0
  (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$key" 2>/dev/null)
}

# pki_ca DIR: self-signed cluster CA (ca.crt, ca.key).
pki_ca() {
  local dir=$1
  [[ -s $dir/ca.crt && -s $dir/ca.key ]] && return 0
  pki_key "$dir/ca.key"
  openssl req -x509 -new -key "$dir/ca.key" -sha256 -days 3650 -subj "/CN=datajob-local-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$dir/ca.crt" 2>/dev/null
}

# pki_cert DIR NAME SUBJECT USAGE [SAN]: NAME.crt/NAME.key signed by DIR/ca.*.
# USAGE is serverAuth, clientAuth or "serverAuth,clientAuth".
pki_cert() {
  local dir=$1 name=$2 subject=$3 usage=$4 san=${5:-}
  [[ -s $dir/$name.crt && -s $dir/$name.key ]] && return 0
  pki_key "$dir/$name.key"
  local ext="$dir/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    echo "subjectKeyIdentifier=hash"
    echo "authorityKeyIdentifier=keyid"
    [[ -n $san ]] && echo "subjectAltName=$san"
  } >"$ext"
  openssl req -new -key "$dir/$name.key" -subj "$subject" -out "$dir/$name.csr" 2>/dev/null
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -sha256 -days 3650 -extfile "$ext" -out "$dir/$name.crt" 2>/dev/null
  rm -f "$dir/$name.csr" "$dir/$name.ext"
}

# pki_service_account DIR: the key pair that signs and verifies service-account tokens.
pki_service_account() {
  local dir=$1
  [[ -s $dir/sa.key && -s $dir/sa.pub ]] && return 0
  (umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/sa.key" 2>/dev/null)
  openssl pkey -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
}

# pki_kubeconfig FILE SERVER CA CERT KEY USER CLUSTER: a self-contained kubeconfig (certs embedded).
pki_kubeconfig() {
  local file=$1 server=$2 ca=$3 cert=$4 key=$5 user=$6 cluster=$7
  [[ -s $file ]] && return 0
  (umask 077 && cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $cluster
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 <"$ca")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$cert")
    client-key-data: $(base64 -w0 <"$key")
contexts:
- name: $user@$cluster
  context:
    cluster: $cluster
    user: $user
current-context: $user@$cluster
EOF
  )
}
