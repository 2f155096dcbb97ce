<?php
// This file is part of the Initech theme for Moodle - https://moodle.org/

/**
 * Callbacks of theme_initech.
 *
 * @package    theme_initech
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

/**
 * Boost's main SCSS (its default preset) followed by Initech's own rules.
 *
 * @param theme_config $theme
 * @return string
 */
function theme_initech_get_main_scss_content($theme) {
    global $CFG;
    $scss = file_get_contents($CFG->dirroot . '/theme/boost/scss/preset/default.scss');
    return $scss . "\n" . file_get_contents(__DIR__ . '/scss/post.scss');
}

/**
 * Variables set before Boost's, which declares its own with !default.
 *
 * @param theme_config $theme
 * @return string
 */
function theme_initech_get_pre_scss($theme) {
    return file_get_contents(__DIR__ . '/scss/pre.scss');
}
