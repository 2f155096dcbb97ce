<?php
defined('MOODLE_INTERNAL') || die();
$plugin->component = 'local_acmetools';
$plugin->version   = 2026100300;
$plugin->requires  = 2024100700;
