<?php
// Liveness: the web server and PHP answer. No database, no Moodle bootstrap,
// so a slow or absent database never restarts a healthy pod.
header('Content-Type: text/plain');
header('Cache-Control: no-store');
echo "live\n";
