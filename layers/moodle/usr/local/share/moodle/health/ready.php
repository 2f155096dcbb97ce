<?php
// Readiness: config.php loads and the site's database answers with an
// installed Moodle (its version row). 503 otherwise, with the reason.
// ABORT_AFTER_CONFIG stops lib/setup.php before sessions, the database and
// the wwwroot host check (probes come by the pod's address, not wwwroot).
define('ABORT_AFTER_CONFIG', true);
if (PHP_SAPI === 'cli') {
    // The entrypoint's install mode asks from the command line.
    define('CLI_SCRIPT', true);
}
define('NO_MOODLE_COOKIES', true);
header('Content-Type: text/plain');
header('Cache-Control: no-store');

function moodle_health_fail(string $why): void {
    http_response_code(503);
    echo "not ready: {$why}\n";
    // The entrypoint's install mode asks from the command line.
    exit(PHP_SAPI === 'cli' ? 1 : 0);
}

try {
    require('/var/www/moodle/config.php');
} catch (Throwable $e) {
    moodle_health_fail('config.php: ' . $e->getMessage());
}
$port = $CFG->dboptions['dbport'] ?? '';
$table = $CFG->prefix . 'config';
try {
    switch ($CFG->dbtype) {
        case 'pgsql':
            $dsn = "pgsql:host={$CFG->dbhost};dbname={$CFG->dbname}" . ($port !== '' ? ";port={$port}" : '');
            break;
        case 'mysqli':
        case 'mariadb':
        case 'auroramysql':
            $dsn = "mysql:host={$CFG->dbhost};dbname={$CFG->dbname}" . ($port !== '' ? ";port={$port}" : '');
            break;
        default:
            moodle_health_fail("database type {$CFG->dbtype} is not probed");
    }
    $pdo = new PDO($dsn, $CFG->dbuser, $CFG->dbpass, [PDO::ATTR_TIMEOUT => 3, PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION]);
    $version = $pdo->query("SELECT value FROM {$table} WHERE name = 'version'")->fetchColumn();
} catch (Throwable $e) {
    moodle_health_fail('database: ' . $e->getMessage());
}
if ($version === false || $version === '') {
    moodle_health_fail('Moodle is not installed in this database');
}
echo "ready {$version}\n";
