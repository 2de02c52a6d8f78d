#!/bin/sh
# QubesFirewall agent @VERSION@ (installed by Install-QubeFirewallAgent; do not edit: it is replaced on update).
#
# dom0 never writes into this qube for a change. It sets features vm-config.qubesfw.* on this qube; qubesd
# exports them to this qube's QubesDB as /vm-config/qubesfw.* (at each start, and live while it runs). This
# agent reads them, checks that every key names this qube and carries the generation of qubesfw.gen, checks
# every value against a strict grammar, and replaces the chains QubesFirewall owns (qubesfw-dnat,
# qubesfw-forward, qubesfw-input, qubesfw-link-forward, qubesfw-link-input in tables ip/ip6 qubes) in one
# nft -f transaction. The jumps from custom-forward/custom-input carry the comments "qubesfirewall" and
# "qubesfirewall-link" and are replaced by handle. Then it keeps one qubesdb-watch open and reads everything
# again after each change. What it applied (or why not) is in $QUBESFW_RUN_DIR/status (default /run/qubesfw).
#
#   qubesfw-agent hook    start the agent detached and return at once (qubes-firewall.d hook, rc.local.d)
#   qubesfw-agent run     the agent itself (applies, then watches); with one already running: applies once
#   qubesfw-agent apply   read and apply once
#   qubesfw-agent status  print the status line
set -u
umask 022
PATH=$PATH:/usr/sbin:/sbin:/usr/bin:/bin
agent_version='@VERSION@'
run_dir=${QUBESFW_RUN_DIR:-/run/qubesfw}
case $0 in /*) self=$0 ;; *) self=$(pwd)/$0 ;; esac
prefix=/vm-config/qubesfw.
# how long qubesdb-watch gets to register before the first read (seconds)
settle=${QUBESFW_SETTLE:-0.5}
case $settle in '' | *[!0-9.]*) settle=0.5 ;; esac
nl='
'

# ------------------------------------------------------------------ grammar

is_uint() { case $1 in '' | *[!0-9]* | 0?*) return 1 ;; esac; [ ${#1} -le "$2" ]; }
is_port() { is_uint "$1" 5 && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }
is_name() {
	case $1 in '' | [!A-Za-z]* | *[!A-Za-z0-9_.-]*) return 1 ;; esac
	[ ${#1} -le 31 ]
}
is_ip4() {
	case $1 in '' | *[!0-9.]* | .* | *. | *..*) return 1 ;; esac
	_o=$IFS; IFS=.; set -f; set -- $1; set +f; IFS=$_o
	[ $# -eq 4 ] || return 1
	for _x; do
		case $_x in [0-9] | [1-9][0-9] | 1[0-9][0-9] | 2[0-4][0-9] | 25[0-5]) ;; *) return 1 ;; esac
	done
}
is_ip6() {
	case $1 in '' | *[!0-9a-f:]* | *:::* | *::*::*) return 1 ;; *:*:*) ;; *) return 1 ;; esac
	[ ${#1} -le 39 ]
}
is_addr() { if [ "$1" = 4 ]; then is_ip4 "$2"; else is_ip6 "$2"; fi; }
is_cidr() {
	case $2 in
	*/*)
		_l=${2#*/}
		is_addr "$1" "${2%/*}" || return 1
		is_uint "$_l" 3 || return 1
		if [ "$1" = 4 ]; then [ "$_l" -le 32 ]; else [ "$_l" -le 128 ]; fi
		;;
	*) is_addr "$1" "$2" ;;
	esac
}
is_sources() {
	[ "$2" = any ] && return 0
	case $2 in '' | ,* | *, | *,,*) return 1 ;; esac
	_o=$IFS; IFS=,; set -f; set -- "$1" $2; set +f; IFS=$_o
	_fam=$1; shift
	for _x; do is_cidr "$_fam" "$_x" || return 1; done
}
is_ingress() {
	case $1 in
	out | up | cl) return 0 ;;
	if:lo | if:vif*) return 1 ;;
	if:*)
		_i=${1#if:}
		case $_i in '' | *[!A-Za-z0-9_.-]* | . | ..) return 1 ;; esac
		[ ${#_i} -le 15 ]
		;;
	*) return 1 ;;
	esac
}
is_ports() {
	case $1 in
	all) return 0 ;;
	*-*) is_port "${1%-*}" && is_port "${1#*-}" && [ "${1%-*}" -lt "${1#*-}" ] ;;
	*) is_port "$1" ;;
	esac
}

# Reads the words of one value into v_*; refuses unknown, repeated or empty fields and stray spaces.
parse_value() {
	v_for= v_gen= v_keys= v_proto= v_port= v_to= v_in= v_nat= v_dst= v_src= v_exp= v_vm= v_ports= v_from=
	case $1 in '' | ' '* | *' ' | *'  '*) why='stray spaces'; return 1 ;; esac
	set -f
	for _w in $1; do
		case $_w in *=?*) ;; *) set +f; why="'$_w' is not key=value"; return 1 ;; esac
		_k=${_w%%=*}
		_v=${_w#*=}
		case $_k in
		for | gen | keys | proto | port | to | in | nat | dst | src | exp | vm | ports | from) ;;
		*) set +f; why="unknown field $_k"; return 1 ;;
		esac
		eval "_seen=\${v_$_k}"
		[ -z "$_seen" ] || { set +f; why="field $_k given twice"; return 1; }
		eval "v_$_k=\$_v"
	done
	set +f
	return 0
}

# ------------------------------------------------------------------ rules

sources_match() { # family-keyword list
	[ "$2" = any ] && return 0
	case $2 in
	*,*) printf ' %s saddr { %s }' "$1" "$(printf '%s' "$2" | sed 's/,/, /g')" ;;
	*) printf ' %s saddr %s' "$1" "$2" ;;
	esac
}
time_match() { [ -n "$v_exp" ] && printf ' meta time < %s' "$v_exp"; return 0; }
ingress_match() {
	case $v_in in
	out) printf 'iifname != "vif*" iifname != "lo"' ;;
	up) printf 'iifgroup 1' ;;
	cl) printf 'iifgroup 2' ;;
	if:*) printf 'iifname "%s"' "${v_in#if:}" ;;
	esac
}

# One key: check it, then append its rules to the files of its family. Sets why on refusal.
render_key() { # path-suffix value
	_key=$1
	case $_key in
	hop4.*.* | tgt4.*.* | lnet4.* | ldst4.*) fam=4 kw=ip tbl=ip ;;
	hop6.*.* | tgt6.*.* | lnet6.* | ldst6.*) fam=6 kw=ip6 tbl=ip6 ;;
	*) why='unknown key'; return 1 ;;
	esac
	case $_key in *[!a-z0-9._-]*) why='bad key name'; return 1 ;; esac
	[ "$tbl" = ip ] || [ -n "$fams_ip6" ] || { why='this qube has no ip6 qubes table with custom chains'; return 1; }
	parse_value "$2" || return 1
	[ -z "$v_keys" ] || { why='keys= belongs to qubesfw.gen'; return 1; }
	is_name "$v_vm" || { why='vm= is not a qube name'; return 1; }
	case $_key in
	hop* | tgt*)
		[ "$v_proto" = tcp ] || [ "$v_proto" = udp ] || { why='proto= must be tcp or udp'; return 1; }
		is_port "$v_port" || { why='port= is not a port'; return 1; }
		is_port "$v_to" || { why='to= is not a port'; return 1; }
		is_sources "$fam" "$v_src" || { why='src= must be any or addresses of the family'; return 1; }
		[ -z "$v_exp" ] || is_uint "$v_exp" 12 || { why='exp= is not a Unix time'; return 1; }
		[ -z "$v_ports$v_from" ] || { why='ports= and from= belong to links'; return 1; }
		_src=$(sources_match "$kw" "$v_src")
		_time=$(time_match)
		_cmt="comment \"$v_proto/$v_port to $v_vm\""
		;;
	esac
	case $_key in
	hop*)
		is_ingress "$v_in" || { why='in= is not out, up, cl or if:<interface>'; return 1; }
		is_addr "$fam" "$v_nat" || { why='nat= is not an address of the family'; return 1; }
		[ "$v_dst" = local ] || is_addr "$fam" "$v_dst" || { why='dst= is not local or an address'; return 1; }
		_ing=$(ingress_match)
		if [ "$v_dst" = local ]; then _dst='fib daddr type local'; else _dst="$kw daddr $v_dst"; fi
		_to=$v_nat
		if [ "$v_to" != "$v_port" ]; then
			if [ "$fam" = 4 ]; then _to="$v_nat:$v_to"; else _to="[$v_nat]:$v_to"; fi
		fi
		printf '%s %s%s %s dport %s%s dnat to %s %s\n' "$_ing" "$_dst" "$_src" "$v_proto" "$v_port" "$_time" "$_to" "$_cmt" >>"$work/$tbl.dnat"
		printf '%s%s %s daddr %s %s dport %s ct status dnat%s accept %s\n' "$_ing" "$_src" "$kw" "$v_nat" "$v_proto" "$v_to" "$_time" "$_cmt" >>"$work/$tbl.forward"
		;;
	tgt*)
		[ -z "$v_in$v_nat" ] || { why='in= and nat= belong to hops'; return 1; }
		is_addr "$fam" "$v_dst" || { why='dst= is not an address of the family'; return 1; }
		printf 'iifgroup 1%s %s daddr %s %s dport %s%s accept %s\n' "$_src" "$kw" "$v_dst" "$v_proto" "$v_to" "$_time" "$_cmt" >>"$work/$tbl.input"
		;;
	l*)
		[ "$v_proto" = tcp ] || [ "$v_proto" = udp ] || { why='proto= must be tcp or udp'; return 1; }
		is_ports "$v_ports" || { why='ports= must be all, a port or a range'; return 1; }
		is_addr "$fam" "$v_src" || { why='src= is not an address of the family'; return 1; }
		is_addr "$fam" "$v_dst" || { why='dst= is not an address of the family'; return 1; }
		is_name "$v_from" || { why='from= is not a qube name'; return 1; }
		[ -z "$v_port$v_to$v_in$v_nat$v_exp" ] || { why='port=, to=, in=, nat= and exp= belong to forwards'; return 1; }
		if [ "$v_ports" = all ]; then _p="meta l4proto $v_proto"; else _p="$v_proto dport $v_ports"; fi
		_line="$kw saddr $v_src $kw daddr $v_dst $_p accept comment \"link $v_from to $v_vm $v_proto/$v_ports\""
		case $_key in
		lnet*) printf 'iifgroup 2 %s\n' "$_line" >>"$work/$tbl.lforward" ;;
		*) printf '%s\n' "$_line" >>"$work/$tbl.linput" ;;
		esac
		;;
	esac
	return 0
}

# The transaction of one table for one owner (chains, marker), after the deletions of earlier jumps.
owned_tx() { # tbl marker chain-spec...   chain-spec = file:chain:kind (kind: nat|forward|input)
	_tbl=$1 _mark=$2
	shift 2
	printf 'table %s qubes {\n' "$_tbl"
	for _c; do
		_name=${_c#*:}; _name=${_name%:*}
		case $_c in
		*:nat) printf '\tchain %s {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t}\n' "$_name" ;;
		*) printf '\tchain %s {\n\t}\n' "$_name" ;;
		esac
	done
	printf '}\n'
	for _c; do _name=${_c#*:}; printf 'flush chain %s qubes %s\n' "$_tbl" "${_name%:*}"; done
	for _c; do
		_name=${_c#*:}
		[ -s "$work/$_tbl.${_c%%:*}" ] && sed "s/^/add rule $_tbl qubes ${_name%:*} /" "$work/$_tbl.${_c%%:*}"
	done
	for _c; do
		_name=${_c#*:}
		case $_c in
		*:forward) [ -s "$work/$_tbl.${_c%%:*}" ] && printf 'insert rule %s qubes custom-forward jump %s comment "%s"\n' "$_tbl" "${_name%:*}" "$_mark" ;;
		*:input) [ -s "$work/$_tbl.${_c%%:*}" ] && printf 'insert rule %s qubes custom-input jump %s comment "%s"\n' "$_tbl" "${_name%:*}" "$_mark" ;;
		esac
	done
	for _c; do
		_name=${_c#*:}
		[ -s "$work/$_tbl.${_c%%:*}" ] || printf 'delete chain %s qubes %s\n' "$_tbl" "${_name%:*}"
	done
	return 0
}

# ------------------------------------------------------------------ status

status() { # state gen message
	_applied=$(cat "$run_dir/applied" 2>/dev/null) || _applied=none
	_msg=$(printf '%s' "$3" | tr '\n' ' ' | tr -cd ' -~' | cut -c1-400)
	printf 'state=%s gen=%s applied=%s version=%s msg=%s\n' "$1" "$2" "${_applied:-none}" "$agent_version" "$_msg" >"$run_dir/status.tmp" &&
		mv -f "$run_dir/status.tmp" "$run_dir/status"
}

# ------------------------------------------------------------------ apply

apply_once() {
	mkdir -p "$run_dir" || return 1
	work="$run_dir/work.$$"
	rm -rf "$work" && mkdir "$work" || return 1
	_rc=0
	apply_set || _rc=$?
	rm -rf "$work"
	return $_rc
}

apply_set() {
	if ! me=$(qubesdb-read /name 2>/dev/null) || ! is_name "$me"; then
		status failed none 'cannot read this qube name from QubesDB /name'
		return 1
	fi
	if ! qubesdb-multiread "$prefix" >"$work/keys.raw" 2>"$work/err"; then
		status failed none "qubesdb-multiread $prefix failed: $(head -c 200 "$work/err")"
		return 1
	fi
	LC_ALL=C sort "$work/keys.raw" >"$work/keys"
	gen= count=0 total=0 foreign=
	while IFS= read -r line; do
		case $line in *' = '*) ;; *) continue ;; esac
		key=${line%% = *}
		value=${line#* = }
		if [ "$key" = gen ]; then
			if parse_value "$value" && [ -n "$v_gen" ] && [ -n "$v_keys" ] && [ -z "$v_proto$v_vm" ]; then
				gen=$v_gen count=$v_keys
				[ "$v_for" = "$me" ] || foreign="qubesfw.gen names '$v_for'"
			else
				foreign="qubesfw.gen is not for=<qube> gen=<hash> keys=<n>"
			fi
		else
			total=$((total + 1))
		fi
	done <"$work/keys"
	case $gen in *[!0-9a-f]*) foreign='qubesfw.gen has a bad generation' ;; esac
	is_uint "$count" 5 || [ "$count" = 0 ] || foreign='qubesfw.gen has a bad key count'
	if [ -n "$foreign" ]; then
		status refused "${gen:-none}" "$foreign; nothing applied"
		return 1
	fi
	if [ -z "$gen" ] && [ "$total" -gt 0 ]; then
		status waiting none "$total keys without qubesfw.gen: waiting for the whole set"
		return 0
	fi
	if [ -n "$gen" ] && [ "$count" != "$total" ]; then
		status waiting "$gen" "qubesfw.gen counts $count keys, $total present: waiting for the whole set"
		return 0
	fi

	fams_ip=yes fams_ip6=
	nft list chain ip6 qubes custom-forward >/dev/null 2>&1 && nft list chain ip6 qubes custom-input >/dev/null 2>&1 && fams_ip6=yes
	refused=
	while IFS= read -r line; do
		case $line in *' = '*) ;; *) continue ;; esac
		key=${line%% = *}
		value=${line#* = }
		[ "$key" = gen ] && continue
		case $value in
		"for=$me gen=$gen "*) ;;
		for=*" gen=$gen "*)
			status refused "$gen" "qubesfw.$key names another qube; nothing applied"
			return 1
			;;
		*)
			status waiting "$gen" "qubesfw.$key does not carry generation $gen: waiting for the whole set"
			return 0
			;;
		esac
	done <"$work/keys"
	while IFS= read -r line; do
		case $line in *' = '*) ;; *) continue ;; esac
		key=${line%% = *}
		[ "$key" = gen ] && continue
		why=
		if ! render_key "$key" "${line#* = }"; then
			refused="$refused qubesfw.$key ($why);"
		fi
	done <"$work/keys"

	for tbl in ip ip6; do
		[ "$tbl" = ip ] || [ -n "$fams_ip6" ] || continue
		if ! nft -a list table "$tbl" qubes >"$work/$tbl.list" 2>"$work/err"; then
			status failed "${gen:-none}" "cannot read table $tbl qubes: $(head -c 200 "$work/err")"
			return 1
		fi
		awk -v t="$tbl qubes" '$1 == "chain" { c = $2 } $1 == "}" { c = "" }
			(c == "custom-forward" || c == "custom-input") && / comment "qubesfirewall(-link)?" # handle [0-9]+$/ { print "delete rule " t " " c " handle " $NF }' \
			"$work/$tbl.list" >>"$work/tx"
	done
	for tbl in ip ip6; do
		[ "$tbl" = ip ] || [ -n "$fams_ip6" ] || continue
		owned_tx "$tbl" qubesfirewall dnat:qubesfw-dnat:nat forward:qubesfw-forward:forward input:qubesfw-input:input >>"$work/tx"
	done
	for tbl in ip ip6; do
		[ "$tbl" = ip ] || [ -n "$fams_ip6" ] || continue
		owned_tx "$tbl" qubesfirewall-link lforward:qubesfw-link-forward:forward linput:qubesfw-link-input:input >>"$work/tx"
	done
	if ! nft -f "$work/tx" 2>"$work/err"; then
		status failed "${gen:-none}" "nft refused the rules; the previous ones are unchanged: $(head -c 300 "$work/err")"
		return 1
	fi
	printf '%s\n' "${gen:-none}" >"$run_dir/applied.tmp" && mv -f "$run_dir/applied.tmp" "$run_dir/applied"
	cp "$work/tx" "$run_dir/last.nft" 2>/dev/null
	if [ -n "$refused" ]; then
		status partial "${gen:-none}" "refused:$refused the other keys are applied"
		return 1
	fi
	status applied "${gen:-none}" "$total keys"
	return 0
}

apply() {
	mkdir -p "$run_dir" || return 1
	if command -v flock >/dev/null 2>&1; then
		{ flock 9 && apply_once; } 9>"$run_dir/apply.lock"
	else
		apply_once
	fi
}

# ------------------------------------------------------------------ modes

run() {
	mkdir -p "$run_dir" || exit 1
	exec 8>"$run_dir/agent.lock"
	_other=$(cat "$run_dir/agent.pid" 2>/dev/null) || _other=
	if command -v flock >/dev/null 2>&1; then
		flock -n 8 || _other=running
	elif [ -n "$_other" ] && [ "$_other" != $$ ] && kill -0 "$_other" 2>/dev/null; then
		_other=running
	fi
	if [ "$_other" = running ]; then
		# an agent runs already: this start only applies again (the base ruleset may just have been reloaded)
		apply
		exit 0
	fi
	echo $$ >"$run_dir/agent.pid"
	# The watch first, then the first read: qubesdb-watch is started and given time to register (it registers before it
	# reads anything, in far less than the settle time) before the first read is asked for, through the same pipe as its
	# events. A change before the read is in the read; a change after it fires the watch; none falls between the two.
	{
		qubesdb-watch -n -1 /vm-config/ 2>/dev/null &
		_watch=$!
		sleep "$settle" 2>/dev/null || sleep 1
		printf '%s\n' "${prefix}start"
		wait "$_watch"
	} 8>&- | {
		while IFS= read -r path; do
			case $path in "$prefix"*) apply ;; esac
		done
	}
	status failed "$(cat "$run_dir/applied" 2>/dev/null || echo none)" 'qubesdb-watch ended; the agent stopped (the rules stay as last applied)'
	exit 1
}

hook() {
	# returns at once: qubes-firewall waits for each hook, and holds every client's traffic until they return
	mkdir -p "$run_dir" 2>/dev/null
	if command -v systemd-run >/dev/null 2>&1 &&
		systemd-run --quiet --collect --unit=qubesfw-agent "$self" run </dev/null >/dev/null 2>&1; then
		return 0
	fi
	# no systemd, or the unit runs already (then this applies once): detached from the caller
	if command -v setsid >/dev/null 2>&1; then
		setsid "$self" run </dev/null >/dev/null 2>&1 &
	else
		"$self" run </dev/null >/dev/null 2>&1 &
	fi
	return 0
}

case ${1:-hook} in
hook) hook ;;
run) run ;;
apply) apply ;;
status) cat "$run_dir/status" ;;
version) printf '%s\n' "$agent_version" ;;
*)
	echo "usage: $0 hook|run|apply|status|version" >&2
	exit 2
	;;
esac
