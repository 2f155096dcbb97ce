<?php
// This file is part of the Globex theme for Moodle - https://moodle.org/

/**
 * Version of theme_globex.
 *
 * @package    theme_globex
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$plugin->component = 'theme_globex';
$plugin->version   = 2026120400;
$plugin->release   = '1.0';
$plugin->maturity  = MATURITY_STABLE;
$plugin->requires  = 2025100600; // Moodle 5.1.
$plugin->dependencies = ['theme_boost' => 2025100600];
