<?php
defined('MOODLE_INTERNAL') || die();
$THEME->name = 'initech';
$THEME->parents = ['boost'];
$THEME->sheets = [];
$THEME->scss = function($theme) { return theme_boost_get_main_scss_content($theme); };
