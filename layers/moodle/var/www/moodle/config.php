<?php  // One config.php for every site of the fleet: everything comes from the environment.
// Each secret may also be given as NAME_FILE (Kubernetes and Docker secrets).
// Client-specific settings go in /etc/moodle/config.d/*.php (a client's layer).
unset($CFG);
global $CFG;
$CFG = new stdClass();

$moodleenv = static function (string $name, ?string $default = null): ?string {
    $file = getenv($name . '_FILE');
    if ($file !== false && $file !== '') {
        $value = @file_get_contents($file);
        if ($value === false) {
            throw new RuntimeException("config.php: {$name}_FILE names {$file}, which cannot be read");
        }
        return rtrim($value, "\r\n");
    }
    $value = getenv($name);
    return ($value === false || $value === '') ? $default : $value;
};
$moodleflag = static function (string $name) use ($moodleenv): bool {
    return in_array(strtolower((string)$moodleenv($name, '')), ['1', 'true', 'yes', 'on'], true);
};

$CFG->dbtype    = $moodleenv('MOODLE_DB_TYPE', 'pgsql');
$CFG->dblibrary = 'native';
$CFG->dbhost    = $moodleenv('MOODLE_DB_HOST', 'localhost');
$CFG->dbname    = $moodleenv('MOODLE_DB_NAME', 'moodle');
$CFG->dbuser    = $moodleenv('MOODLE_DB_USER', 'moodle');
$CFG->dbpass    = $moodleenv('MOODLE_DB_PASSWORD', '');
$CFG->prefix    = $moodleenv('MOODLE_DB_PREFIX', 'mdl_');
$CFG->dboptions = [
    'dbpersist' => false,
    'dbport'    => $moodleenv('MOODLE_DB_PORT', ''),
    'dbsocket'  => '',
];

$CFG->wwwroot   = rtrim((string)$moodleenv('MOODLE_WWWROOT', 'http://localhost'), '/');
$CFG->dataroot  = $moodleenv('MOODLE_DATAROOT', '/var/www/moodledata');
$CFG->localcachedir = $moodleenv('MOODLE_LOCALCACHEDIR', '/var/cache/moodle');
$CFG->admin     = 'admin';
$CFG->directorypermissions = 02770;
$CFG->reverseproxy = $moodleflag('MOODLE_REVERSE_PROXY');
$CFG->sslproxy     = $moodleflag('MOODLE_SSL_PROXY');
// The web server routes unknown paths to r.php (Moodle 5.1's router).
$CFG->routerconfigured = true;
$CFG->pathtophp = '/usr/bin/php';
// Plugins and paths cannot be changed from the web: the image is the truth.
$CFG->preventexecpath = true;
$CFG->disableupdateautodeploy = true;

// Mail goes to the container's exim on loopback, which relays it to
// MOODLE_SMTP_HOST (moodle-entrypoint configures it at start).
$CFG->smtphosts = $moodleenv('MOODLE_SMTP_LOCAL', 'localhost:25');
$CFG->smtpsecure = '';
$CFG->smtpauthtype = '';
$CFG->noreplyaddress = $moodleenv('MOODLE_NOREPLY')
    ?? ('noreply@' . (parse_url($CFG->wwwroot, PHP_URL_HOST) ?: 'localhost'));

// Optional Redis: sessions, and the application cache (MUC) when the site
// has the forced-cache plugin (tool_forcedcache), as moodle.org runs.
$redishost = $moodleenv('MOODLE_REDIS_HOST');
if ($redishost !== null) {
    $redisport = (int)$moodleenv('MOODLE_REDIS_PORT', '6379');
    $redispass = $moodleenv('MOODLE_REDIS_PASSWORD', '');
    $redisprefix = $moodleenv('MOODLE_REDIS_PREFIX', $CFG->dbname . '_');
    $CFG->session_handler_class = '\core\session\redis';
    $CFG->session_redis_host = $redishost;
    $CFG->session_redis_port = $redisport;
    $CFG->session_redis_auth = $redispass;
    $CFG->session_redis_prefix = $redisprefix . 'sess_';
    $CFG->session_redis_acquire_lock_timeout = 120;
    $CFG->session_redis_lock_expire = 7200;
    if ($moodleflag('MOODLE_REDIS_MUC')) {
        $CFG->alternative_cache_factory_class = 'tool_forcedcache_cache_factory';
        $CFG->tool_forcedcache_config_array = [
            'stores' => [
                'redis' => [
                    'type' => 'redis',
                    'config' => [
                        'server' => "{$redishost}:{$redisport}",
                        'password' => $redispass,
                        'prefix' => $redisprefix . 'muc_',
                        'serializer' => 1,
                        'compressor' => 0,
                    ],
                ],
            ],
            'rules' => [
                'application' => [['stores' => ['redis']]],
                'session' => [['stores' => ['redis']]],
                'request' => [],
            ],
            'definitionoverrides' => [],
        ];
    }
}

$theme = $moodleenv('MOODLE_THEME');
if ($theme !== null) {
    $CFG->theme = $theme;
}
foreach (glob('/etc/moodle/config.d/*.php') ?: [] as $moodleextra) {
    require($moodleextra);
}
unset($moodleenv, $moodleflag, $redishost, $redisport, $redispass, $redisprefix, $theme, $moodleextra);

// Moodle 5.1 keeps its code in public/; 4.5 is flat.
if (file_exists(__DIR__ . '/public/lib/setup.php')) {
    require_once(__DIR__ . '/public/lib/setup.php');
} else {
    require_once(__DIR__ . '/lib/setup.php');
}
// There is no php closing tag in this file, on purpose.
