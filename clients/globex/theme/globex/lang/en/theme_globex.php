<?php
// This file is part of the Globex theme for Moodle - https://moodle.org/

/**
 * Strings of theme_globex.
 *
 * @package    theme_globex
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$string['pluginname'] = 'Globex';
$string['choosereadme'] = 'The Globex theme: Boost in Globex colours.';
$string['configtitle'] = 'Globex';
$string['privacy:metadata'] = 'The Globex theme stores no personal data.';
