<?php
// This file is part of the Initech theme for Moodle - https://moodle.org/

/**
 * Version of theme_initech.
 *
 * @package    theme_initech
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$plugin->component = 'theme_initech';
$plugin->version   = 2026120400;
$plugin->release   = '1.0';
$plugin->maturity  = MATURITY_STABLE;
$plugin->requires  = 2024100700; // Moodle 4.5.
$plugin->dependencies = ['theme_boost' => 2024100700];
