#!/usr/bin/env bash
# The fleet with real Moodle, by hand (not run by .ci/run): builds a client on
# each release line from real Moodle trees, and runs it as the agency does,
# against Debian's PostgreSQL on loopback and an SMTP sink on loopback.
#
#   MOODLE_45_SRC=~/src/moodle-4.5.8 MOODLE_51_SRC=~/src/moodle-5.1.3 ci/real-moodle.sh [4.5] [5.1]
#   STANDIN=1 ci/real-moodle.sh        the same with ci/standin-moodle's trees:
#                                      the checks that need real Moodle are skipped
#
# The containers run on Docker's default bridge, as on a platform: the database
# and the sink listen on the bridge's gateway address (loopback to the host,
# another host to the container, whose exim refuses to relay to itself).
# Per line it checks: install completes; web serves the login page (200); as
# admin, the dashboard and admin/environment.php answer 200; admin/cli/checks.php
# runs; the probes; denied paths answer 404; cron completes a run; a mail
# reaches the sink from the no-reply address; docker stop of web takes < 3 s with
# status 0; the systemd mode boots, serves, and its timer runs cron.
# Needs root (apt-get, docker with --network host). Prints PASS/FAIL per check
# and exits non-zero when one failed.
set -uo pipefail
cd "$(dirname "$0")/.."
lines=("$@")
[ ${#lines[@]} -gt 0 ] || lines=(4.5 5.1)
work=${WORK:-/tmp/real-moodle}
mkdir -p "$work"
failed=0
pass() { printf 'PASS %-5s %s\n' "$line" "$*"; }
fail() { printf 'FAIL %-5s %s\n' "$line" "$*"; failed=1; }
skip() { printf 'SKIP %-5s %s\n' "$line" "$*"; }
check() { # check DESCRIPTION COMMAND…
    local what=$1
    shift
    if "$@" >"$work/check.out" 2>&1; then pass "$what"; else fail "$what: $(tail -5 "$work/check.out" | tr '\n' ' ')"; fi
}

# --- Moodle trees ------------------------------------------------------------
real=1
for line in "${lines[@]}"; do
    var=MOODLE_${line/./}_SRC
    src=${!var:-}
    if [ -n "$src" ]; then
        [ -f "$src/version.php" ] || [ -f "$src/public/version.php" ] || { echo "$var=$src holds no Moodle (no version.php)" >&2; exit 2; }
        rm -rf "upstream/moodle-$line"
        mkdir -p "upstream/moodle-$line"
        tar -C "$src" --exclude=.git --exclude=node_modules -cf - . | tar -C "upstream/moodle-$line" -xf -
    elif [ "${STANDIN:-}" = 1 ]; then
        real=0
        rm -rf "upstream/moodle-$line"
        ci/standin-moodle "upstream/moodle-$line" "$line"
    else
        echo "set $var to a Moodle $line tree (or STANDIN=1 for generated stand-ins)" >&2
        exit 2
    fi
done

# --- PostgreSQL on loopback and the bridge's gateway -------------------------------
gw=$(ip -4 -o addr show docker0 2>/dev/null | awk '{sub("/.*", "", $4); print $4; exit}')
[ -n "$gw" ] || { echo "no docker0 address: Docker's default bridge is needed" >&2; exit 2; }
if ! command -v pg_lsclusters >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
cluster=$(pg_lsclusters -h | awk 'NR == 1 {print $1, $2}')
[ -n "$cluster" ] || { echo "no PostgreSQL cluster (pg_createcluster)" >&2; exit 2; }
conf=/etc/postgresql/${cluster/ //}
mkdir -p "$conf/conf.d"
echo "listen_addresses = 'localhost,$gw'" >"$conf/conf.d/real-moodle.conf"
grep -q "real-moodle" "$conf/pg_hba.conf" ||
    echo "host all all $gw/16 scram-sha-256 # real-moodle: Docker's bridge" >>"$conf/pg_hba.conf"
pg_ctlcluster $cluster restart
pgport=$(pg_lsclusters -h | awk 'NR == 1 {print $3}')
psql() { runuser -u postgres -- psql -p "$pgport" -qAtX "$@"; }
psql -c 'select 1' >/dev/null || { echo "PostgreSQL does not answer on port $pgport" >&2; exit 2; }

# --- an SMTP sink on loopback ------------------------------------------------------
sinkdir=$work/mail
rm -rf "$sinkdir" && mkdir -p "$sinkdir"
sinkport=2525
python3 ci/smtp-sink.py "$gw" "$sinkport" "$sinkdir" >/dev/null &
sink=$!
cleanup() {
    kill "$sink" 2>/dev/null
    for c in rm-web rm-cron rm-vm; do docker rm -f "$c" >/dev/null 2>&1; done
}
trap cleanup EXIT

# --- build -------------------------------------------------------------------------
cargo build --release --locked -q || exit 1
bin=target/release/imgbuild
declare -A client=([4.5]=client-initech [5.1]=client-acme)
images=()
for line in "${lines[@]}"; do images+=("${client[$line]}"); done
$bin lock >/dev/null || exit 1
$bin build "${images[@]}" -o "docker-archive:$work/fleet.tar" || exit 1
docker load -i "$work/fleet.tar" | tail -n "${#images[@]}"

wwwroot=http://localhost:8080
http() { curl -s -o "$work/page.html" -w '%{http_code}' --max-time 60 -b "$work/jar" -c "$work/jar" "$@"; }

for line in "${lines[@]}"; do
    image=${client[$line]}
    db=moodle${line/./}
    echo "== Moodle $line: $image"
    psql -c "DROP DATABASE IF EXISTS $db" -c "DROP ROLE IF EXISTS $db" \
        -c "CREATE ROLE $db LOGIN PASSWORD 'secret-$db'" -c "CREATE DATABASE $db OWNER $db ENCODING 'UTF8' TEMPLATE template0"
    docker volume rm -f "$db-data" >/dev/null 2>&1
    printf 'secret-%s\n' "$db" >"$work/db.secret"
    printf 'Admin-pass-1!\n' >"$work/admin.secret"
    chmod 0644 "$work/db.secret" "$work/admin.secret"
    env=(-v "$db-data:/var/www/moodledata" -v "$work:/run/secrets/site:ro"
        -e MOODLE_WWWROOT=$wwwroot -e MOODLE_DB_HOST="$gw" -e MOODLE_DB_PORT="$pgport"
        -e MOODLE_DB_NAME=$db -e MOODLE_DB_USER=$db -e MOODLE_DB_PASSWORD_FILE=/run/secrets/site/db.secret
        -e MOODLE_ADMIN_PASSWORD_FILE=/run/secrets/site/admin.secret -e MOODLE_ADMIN_EMAIL=admin@example.org
        -e MOODLE_SMTP_HOST="$gw" -e MOODLE_SMTP_PORT=$sinkport -e MOODLE_SMTP_TLS=off
        -e MOODLE_NOREPLY=noreply@acme.example -e TZ=Europe/Zurich)

    # A missing variable: one line, non-zero.
    out=$(docker run --rm "${env[@]}" -e MOODLE_DB_HOST= "$image" web 2>&1)
    status=$?
    if [ $status -ne 0 ] && [ "$(echo "$out" | wc -l)" = 1 ] && echo "$out" | grep -q MOODLE_DB_HOST; then
        pass "missing MOODLE_DB_HOST: status $status, '$out'"
    else fail "missing MOODLE_DB_HOST: status $status, '$out'"; fi

    start=$(date +%s)
    if docker run --rm "${env[@]}" "$image" install >"$work/install.log" 2>&1; then
        pass "install completed in $(($(date +%s) - start)) s: $(tail -1 "$work/install.log")"
    else
        fail "install: $(tail -5 "$work/install.log" | tr '\n' ' ')"
        continue
    fi

    docker rm -f rm-web >/dev/null 2>&1
    docker run -d --name rm-web -p 8080:80 "${env[@]}" "$image" >/dev/null
    for _ in $(seq 60); do [ "$(http $wwwroot/_health/live)" = 200 ] && break; sleep 0.5; done
    code=$(http $wwwroot/_health/live) && [ "$code" = 200 ] && pass "/_health/live 200" || fail "/_health/live $code"
    code=$(http $wwwroot/_health/ready) && [ "$code" = 200 ] && pass "/_health/ready 200: $(cat "$work/page.html")" || fail "/_health/ready $code: $(head -c 300 "$work/page.html")"
    rm -f "$work/jar"
    code=$(http $wwwroot/login/index.php)
    [ "$code" = 200 ] && pass "login page 200 ($(wc -c <"$work/page.html") bytes)" || fail "login page $code: $(head -c 300 "$work/page.html")"
    for path in /.idea/workspace.xml /admin/environment.xml /composer.json /vendor/autoload.php /node_modules/ /lib/tests/ /config-dist.php.lock; do
        code=$(http "$wwwroot$path")
        case $code in 403 | 404) pass "denied $path: $code" ;; *) fail "denied $path: $code" ;; esac
    done
    if [ $real = 1 ]; then
        # The login form's token, from the form itself (page.html last held a denied path).
        http $wwwroot/login/index.php >/dev/null
        token=$(sed -n 's/.*name="logintoken" value="\([^"]*\)".*/\1/p' "$work/page.html" | head -1)
        code=$(http -X POST --data-urlencode username=admin --data-urlencode "password=Admin-pass-1!" \
            --data-urlencode "logintoken=$token" $wwwroot/login/index.php)
        code=$(http $wwwroot/my/)
        if [ "$code" = 200 ] && ! grep -q 'id="login"' "$work/page.html"; then pass "dashboard as admin 200 ($(grep -o '<title>[^<]*' "$work/page.html" | head -1 | cut -c8-))"
        else fail "dashboard as admin $code: $(grep -o '<title>[^<]*' "$work/page.html" | head -1)"; fi
        code=$(http $wwwroot/admin/environment.php)
        if [ "$code" = 200 ] && ! grep -q 'id="login"' "$work/page.html"; then pass "admin/environment.php 200 ($(grep -o '<title>[^<]*' "$work/page.html" | head -1 | cut -c8-))"
        else fail "admin/environment.php $code"; fi
        # The client's Boost child theme renders the dashboard: its CSS is served.
        theme=${image#client-}
        code=$(http $wwwroot/my/)
        css=$(grep -oE "[^\"]*styles\.php(/|\?theme=)$theme[^\"]*" "$work/page.html" | head -1 | sed 's/&amp;/\&/g')
        if [ "$code" = 200 ] && [ -n "$css" ] && [ "$(http "$css")" = 200 ] && grep -q . "$work/page.html"; then
            pass "dashboard drawn by theme_$theme, its CSS 200 ($(wc -c <"$work/page.html") bytes)"
        else fail "theme_$theme: dashboard $code, CSS '${css:-none}'"; fi
    else
        skip "admin login, dashboard, admin/environment.php: the stand-in has no Moodle to log into"
        code=$(http $wwwroot/)
        grep -q '"max_input_vars": "5000"' "$work/page.html" && grep -q '"redis"' "$work/page.html" && pass "stand-in page $code reports max_input_vars 5000 and redis" || fail "stand-in page $code: $(head -c 300 "$work/page.html")"
    fi
    # As on a running site, cron has run (every minute) before the checks.
    [ $real = 1 ] && docker exec -u www-data rm-web php /var/www/moodle/admin/cli/cron.php --keep-alive=0 >"$work/cron-before-checks.out" 2>&1
    out=$(docker exec -u www-data rm-web php /var/www/moodle/admin/cli/checks.php 2>&1)
    status=$?
    [ $status -eq 0 ] && pass "admin/cli/checks.php status 0: $(echo "$out" | tail -3 | tr '\n' ' ')" || fail "admin/cli/checks.php status $status: $(echo "$out" | tail -8 | tr '\n' ' ')"

    # Mail: Moodle → the container's exim on loopback → the sink.
    before=$(ls "$sinkdir" | wc -l)
    if [ $real = 1 ]; then
        docker exec -u www-data rm-web php -r 'define("CLI_SCRIPT", true); require "/var/www/moodle/config.php";
            $u = get_admin(); $u->email = "someone@example.net";
            exit(email_to_user($u, core_user::get_noreply_user(), "fleet check '"$line"'", "sent by ci/real-moodle.sh") ? 0 : 1);' >"$work/mail.out" 2>&1
    else
        docker exec -u www-data -e MOODLE_STANDIN_MAIL_TO=someone@example.net rm-web php /var/www/moodle/admin/cli/cron.php >"$work/mail.out" 2>&1
    fi
    for _ in $(seq 30); do [ "$(ls "$sinkdir" | wc -l)" -gt "$before" ] && break; sleep 1; done
    last=$(ls -t "$sinkdir" | head -1)
    if [ "$(ls "$sinkdir" | wc -l)" -gt "$before" ]; then
        pass "mail reached the sink: $(grep -m1 '^X-Envelope-From' "$sinkdir/$last"), $(grep -m1 -i '^From:' "$sinkdir/$last"), $(grep -m1 -i '^Subject:' "$sinkdir/$last")"
    else fail "no mail at the sink: $(tail -3 "$work/mail.out" | tr '\n' ' ') exim: $(docker exec rm-web tail -3 /var/log/exim4/mainlog 2>&1 | tr '\n' ' ')"; fi

    logs=$(docker logs rm-web 2>&1 | wc -l)
    [ "$logs" -gt 0 ] && pass "docker logs shows the server's logs ($logs lines)" || fail "docker logs is empty"
    start=$(date +%s.%N)
    docker stop rm-web >/dev/null
    took=$(echo "$(date +%s.%N) - $start" | bc)
    status=$(docker inspect -f '{{.State.ExitCode}}' rm-web)
    if [ "$status" = 0 ] && [ "$(echo "$took < 3" | bc)" = 1 ]; then pass "docker stop web: ${took%???????} s, status $status"; else fail "docker stop web: ${took} s, status $status"; fi
    docker rm -f rm-web >/dev/null

    # cron: one run completes.
    docker rm -f rm-cron >/dev/null 2>&1
    docker run -d --name rm-cron "${env[@]}" "$image" cron >/dev/null
    for _ in $(seq 150); do docker logs rm-cron 2>&1 | grep -q 'cron run ended' && break; sleep 1; done
    ended=$(docker logs rm-cron 2>&1 | grep 'cron run ended' | head -1)
    case $ended in *"status 0"*) pass "cron: $ended" ;; *) fail "cron: ${ended:-no run ended in 150 s}: $(docker logs rm-cron 2>&1 | tail -5 | tr '\n' ' ')" ;; esac
    start=$(date +%s.%N)
    docker stop rm-cron >/dev/null
    pass "docker stop cron: $(echo "$(date +%s.%N) - $start" | bc | cut -c1-4) s, status $(docker inspect -f '{{.State.ExitCode}}' rm-cron)"
    docker rm -f rm-cron >/dev/null

    # systemd: boots, serves, and the timer runs cron with the container's environment.
    docker rm -f rm-vm >/dev/null 2>&1
    docker run -d --name rm-vm -p 8080:80 "${env[@]}" --stop-signal SIGRTMIN+3 --tmpfs /run --tmpfs /run/lock \
        -v /sys/fs/cgroup:/sys/fs/cgroup:ro "$image" systemd >/dev/null
    for _ in $(seq 60); do
        state=$(docker exec rm-vm systemctl is-system-running 2>/dev/null)
        case $state in running | degraded) break ;; esac
        sleep 1
    done
    [ "$state" = running ] && pass "systemd: is-system-running = $state" || fail "systemd: is-system-running = $state: $(docker exec rm-vm systemctl --failed --no-legend 2>&1 | tr '\n' ' ')"
    code=$(http $wwwroot/_health/ready)
    [ "$code" = 200 ] && pass "systemd: /_health/ready 200" || fail "systemd: /_health/ready $code $(head -c 200 "$work/page.html")"
    for _ in $(seq 90); do
        docker exec rm-vm journalctl -u moodle-cron.service --no-pager 2>/dev/null | grep -q 'Finished\|Deactivated successfully' && break
        sleep 1
    done
    result=$(docker exec rm-vm systemctl show moodle-cron.service -p Result -p ExecMainStatus --value 2>&1 | tr '\n' ' ')
    if docker exec rm-vm journalctl -u moodle-cron.service --no-pager 2>/dev/null | grep -q 'Finished\|Deactivated successfully'; then
        pass "systemd: moodle-cron.timer ran cron (Result/status: $result)"
        if [ $real = 0 ]; then
            seen=$(docker exec rm-vm tail -1 /var/www/moodledata/standin-cron.log 2>&1)
            case $seen in *"for $wwwroot"*) pass "systemd: cron saw the container's environment: $seen" ;; *) fail "systemd: cron's environment: $seen" ;; esac
        fi
    else fail "systemd: no cron run in 90 s: $(docker exec rm-vm journalctl -u moodle-cron.service --no-pager 2>&1 | tail -5 | tr '\n' ' ')"; fi
    for t in $(docker exec rm-vm systemctl list-timers --all --no-legend 2>/dev/null | grep -o '[^ ]*\.timer'); do
        docker exec rm-vm systemctl cat "$(docker exec rm-vm systemctl show -p Triggers --value "$t")" >/dev/null 2>&1 || fail "systemd: $t has no service behind it"
    done
    start=$(date +%s.%N)
    docker stop rm-vm >/dev/null
    took=$(echo "$(date +%s.%N) - $start" | bc)
    status=$(docker inspect -f '{{.State.ExitCode}}' rm-vm)
    [ "$(echo "$took < 10" | bc)" = 1 ] && pass "systemd: docker stop (SIGRTMIN+3) ${took%???????} s, status $status" || fail "systemd: docker stop ${took} s, status $status"
    docker rm -f rm-vm >/dev/null
done
[ $failed = 0 ] && echo "real-moodle: all checks passed" || echo "real-moodle: some checks FAILED"
exit $failed
