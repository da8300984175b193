#!/usr/bin/env bash
# Drives the emulator with plain curl, as a user's shell script against the API reference would. Reads
# HCLOUD_ENDPOINT and AUTH_HEADER_FILE (a file holding "Authorization: Bearer ...", so the token never shows in a
# process list) from the environment; the phase is the first argument. Prints one JSON line per call:
# {"step": NAME, "status": HTTP_STATUS, "allow": ALLOW_HEADER, "body": BODY_OR_NULL}.
set -euo pipefail
: "${HCLOUD_ENDPOINT:?}" "${AUTH_HEADER_FILE:?}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# call STEP METHOD PATH [JSON_BODY]
call() {
  local step=$1 method=$2 path=$3 body=${4:-}
  local args=(-sS --max-time 20 -o "$work/body" -D "$work/headers" -w '%{http_code}' -H @"$AUTH_HEADER_FILE")
  if [[ $method == HEAD ]]; then args+=(--head); else args+=(-X "$method"); fi
  if [[ -n $body ]]; then args+=(-H 'Content-Type: application/json' --data "$body"); fi
  local status
  status=$(curl "${args[@]}" "$HCLOUD_ENDPOINT$path")
  local allow
  allow=$(tr -d '\r' <"$work/headers" | sed -n 's/^[Aa]llow: //p')
  local text="null"
  if [[ $method != HEAD && -s $work/body ]]; then text=$(cat "$work/body"); fi
  printf '{"step":"%s","status":%s,"allow":"%s","body":%s}\n' "$step" "$status" "$allow" "$text"
}

case ${1:-} in
  primary-ip)
    # The current API creates an unassigned primary IP in a location (old clients only know `datacenter`).
    call primary_ip POST /primary_ips \
      '{"name":"web-ip","type":"ipv4","assignee_type":"server","location":"fsn1","auto_delete":false,"labels":{"app":"web"}}'
    ;;
  probes)
    call head_servers HEAD /servers
    call options_server OPTIONS /servers/1
    call floating_ips GET /floating_ips
    call load_balancer GET /load_balancers/7
    call types_sorted GET '/server_types?sort=name:desc&per_page=3'
    call labels_null PUT "/ssh_keys/$2" '{"labels":null}'
    call pinned_unknown POST /servers \
      '{"name":"x","server_type":"cx23","image":"ubuntu-24.04","public_net":{"ipv4":1,"enable_ipv4":true,"routed":true}}'
    ;;
  leftovers)
    for c in servers volumes primary_ips firewalls networks placement_groups ssh_keys; do
      call "$c" GET "/$c"
    done
    call snapshots GET '/images?type=snapshot'
    ;;
  *)
    echo "usage: $0 primary-ip | probes SSH_KEY_ID | leftovers" >&2
    exit 2
    ;;
esac
