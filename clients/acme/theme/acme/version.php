<?php
defined('MOODLE_INTERNAL') || die();
$plugin->component = 'theme_acme';
$plugin->version   = 2026110100;
$plugin->requires  = 2024100700;
$plugin->dependencies = ['theme_boost' => 2024100700];
